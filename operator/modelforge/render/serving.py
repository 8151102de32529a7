"""A ModelServe as a Deployment + Service, with the engine (vLLM or ms-swift) behind one small interface.

Pure: the resolved model (paths inside the pod, adapters, claims to mount) comes in as a value, decided
in plan/serving.py (this module only builds argv and manifests; `ResolvedModel` and `gpus_per_replica`
are re-exported from there for callers).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ..api.common import Hub
from ..api.modelserve import Engine, ModelServeSpec
from ..paths import PVC_ROOT, TRUST_REMOTE_CODE_ENV, pod_path
from ..plan.serving import (
    SYSTEM_VARIABLE,
    ResolvedModel,
    from_hub,
    gpus_per_replica,
    manages_adapters,
    wraps_chat_template,
)
from .names import fit, label_value
from .security import harden
from .settings import RenderSettings
from .training import MANAGED_BY, Owner

API_PORT = 8000
AGENT_PORT = 8091  # the serve agent's read-only report, GET /adapters (launcher/serve_agent.py)
ADAPTERS_MOUNT = "/etc/modelforge/adapters"
CHAT_TEMPLATE_MOUNT = "/etc/modelforge/chat-template"  # the chat-template init step writes, the engine reads
CHAT_TEMPLATE = f"{CHAT_TEMPLATE_MOUNT}/chat-template.jinja"
SPEC_HASH = "modelforge.io/spec-hash"
# vLLM: LoRA slots in one batch when spec.maxLoras is unset. Not the number of adapters: more can be loaded
# (they are swapped in), so adding or removing an adapter never changes the arguments (no rollout).
DEFAULT_MAX_LORAS = 4


class ServingEngine(Protocol):
    name: str
    image_setting: str

    def container_command(
        self, spec: ModelServeSpec, model: ResolvedModel, served_name: str
    ) -> tuple[list[str], list[str]]: ...

    def api_key_env(self) -> str: ...


class VllmEngine:
    name = "vllm"
    image_setting = "vllm_image"

    def api_key_env(self) -> str:
        return "VLLM_API_KEY"  # vllm serve reads it like --api-key; the key never appears in args

    def container_command(
        self, spec: ModelServeSpec, model: ResolvedModel, served_name: str
    ) -> tuple[list[str], list[str]]:
        args = [pod_path(model.base), "--host", "0.0.0.0", "--port", str(API_PORT),
                "--served-model-name", served_name,
                "--tensor-parallel-size", str(spec.tensor_parallel),
                "--pipeline-parallel-size", str(spec.pipeline_parallel),
                "--gpu-memory-utilization", str(spec.gpu_memory_utilization),
                "--dtype", spec.dtype.value]  # fmt: skip
        if spec.max_model_len:
            args += ["--max-model-len", str(spec.max_model_len)]
        if from_hub(spec, model) and spec.model.revision:
            args += ["--revision", spec.model.revision]
        if spec.quantization:
            args += ["--quantization", spec.quantization]
        if spec.enable_prefix_caching:
            args += ["--enable-prefix-caching"]
        if spec.model.trust_remote_code:
            args += ["--trust-remote-code"]
        if spec.sampling:
            # Merged with the model's own generation_config.json (vLLM's --generation-config auto).
            override = {"temperature": spec.sampling.temperature, "top_p": spec.sampling.top_p,
                        "max_new_tokens": spec.sampling.max_tokens}  # fmt: skip
            given = {k: v for k, v in override.items() if v is not None}
            if given:  # `sampling: {}` overrides nothing
                args += ["--override-generation-config", json.dumps(given, separators=(",", ":"))]
        if wraps_chat_template(spec, model):
            # spec.systemPrompt: the model's template, wrapped by the init step, adds it when a request has none.
            kwargs = json.dumps({SYSTEM_VARIABLE: spec.system_prompt}, separators=(",", ":"))
            args += ["--chat-template", CHAT_TEMPLATE, "--default-chat-template-kwargs", kwargs]
        if manages_adapters(spec, model):
            # The adapters themselves are loaded by the serve agent (runtime LoRA API), not listed here.
            args += ["--enable-lora", "--max-lora-rank", str(spec.max_lora_rank or 64)]
            args += ["--max-loras", str(spec.max_loras or DEFAULT_MAX_LORAS)]
        return ["vllm", "serve"], args + list(spec.extra_args or ())


class SwiftEngine:
    """ms-swift's own server (`swift deploy`, PyTorch backend): CPU and tiny models, e2e and demos."""

    name = "swift"
    image_setting = "serve_swift_image"

    def api_key_env(self) -> str:
        return "MODELFORGE_API_KEY"

    def container_command(
        self, spec: ModelServeSpec, model: ResolvedModel, served_name: str
    ) -> tuple[list[str], list[str]]:
        args = ["--model", pod_path(model.base), "--infer_backend", "pt",
                "--host", "0.0.0.0", "--port", str(API_PORT), "--served_model_name", served_name]  # fmt: skip
        if from_hub(spec, model):  # ms-swift downloads from ModelScope unless told otherwise
            args += ["--use_hf", "true" if spec.model.hub == Hub.HUGGINGFACE else "false"]
            if spec.model.revision:
                args += ["--model_revision", spec.model.revision]
        if model.adapters:
            args += ["--adapters", *(f"{n}={pod_path(s)}" for n, s in model.adapters)]
        if spec.max_model_len:
            args += ["--max_length", str(spec.max_model_len)]
        if spec.system_prompt:
            args += ["--system", spec.system_prompt]
        if spec.sampling:  # swift deploy fills what a request leaves unset from these
            for flag, value in (("--temperature", spec.sampling.temperature), ("--top_p", spec.sampling.top_p),
                                ("--max_new_tokens", spec.sampling.max_tokens)):  # fmt: skip
                if value is not None:
                    args += [flag, str(value)]
        # The API key (MODELFORGE_API_KEY, from the Secret) is read by the entry point, never an argument.
        return ["python", "-m", "modelforge.launcher.swift_serve"], args + list(spec.extra_args or ())


ENGINES: dict[str, ServingEngine] = {Engine.VLLM.value: VllmEngine(), Engine.SWIFT.value: SwiftEngine()}


def engine_for(spec: ModelServeSpec) -> ServingEngine:
    try:
        return ENGINES[spec.engine.value]
    except KeyError:
        raise ValueError(f"spec.engine: unknown engine {spec.engine!r}; use one of {', '.join(ENGINES)}") from None


def adapters_config(owner: Owner, model: ResolvedModel, labels: dict[str, str]) -> dict[str, Any]:
    """The desired adapters for the serve agent, as pod paths: `<serve>-adapters`, mounted into every replica."""
    desired = [{"name": n, "path": pod_path(s)} for n, s in model.adapters]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": adapters_name(owner.name), "namespace": owner.namespace, "labels": labels,
                     "ownerReferences": [owner.reference()]},
        "data": {"adapters.json": json.dumps(desired, indent=1) + "\n"},
    }  # fmt: skip


# On each serving pod (not its template: a change there would roll the pods): the digest of the adapters list it
# was last told about. Patching a pod makes its kubelet sync it now, which refreshes the mounted ConfigMap at
# once instead of at the kubelet's next periodic sync (up to ~90 s with the defaults: measured in kind).
ADAPTERS_DIGEST = "modelforge.io/adapters-digest"


def adapters_digest(config_map: dict[str, Any]) -> str:
    return hashlib.sha256(config_map["data"]["adapters.json"].encode()).hexdigest()[:16]


def pods_to_nudge(config_map: dict[str, Any] | None, pods: Iterable[dict[str, Any]]) -> dict[str, str]:
    """The serving pods (name -> digest) whose annotation is behind the adapters ConfigMap; terminating pods
    are left alone."""
    if config_map is None:
        return {}
    digest = adapters_digest(config_map)
    return {
        pod["metadata"]["name"]: digest for pod in pods
        if not pod["metadata"].get("deletionTimestamp")
        and (pod["metadata"].get("annotations") or {}).get(ADAPTERS_DIGEST) != digest
    }  # fmt: skip


def adapters_name(serve: str) -> str:
    return fit(serve, "-adapters", 253)  # a ConfigMap name is a DNS subdomain


def agent_container(
    spec: ModelServeSpec, engine: ServingEngine, manage: bool, settings: RenderSettings, key_env: list[dict[str, Any]]
) -> dict[str, Any]:
    """The serve agent sidecar: loads live adapters (vLLM) and reports what the engine serves, with the key
    from the same Secret reference as the engine, so the operator never reads a Secret."""
    args = ["serve-agent", "--engine", f"http://127.0.0.1:{API_PORT}", "--port", str(AGENT_PORT)]
    if manage:
        args += ["--adapters", f"{ADAPTERS_MOUNT}/adapters.json"]
    if spec.api_key_secret_ref:
        args += ["--api-key-env", engine.api_key_env()]
    return {
        "name": "agent",
        "image": settings.agent_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modelforge"],
        "args": args,
        "env": list(key_env),
        "ports": [{"name": "agent", "containerPort": AGENT_PORT}],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "volumeMounts": [{"name": "adapters", "mountPath": ADAPTERS_MOUNT, "readOnly": True}] if manage else [],
    }


def chat_template_container(
    model: ResolvedModel, settings: RenderSettings, claims: list[dict[str, Any]]
) -> dict[str, Any]:
    """The init step that writes the model's chat template with spec.systemPrompt's wrapper (vLLM only)."""
    return {
        "name": "chat-template",
        "image": settings.agent_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modelforge"],
        "args": ["chat-template", "--model", pod_path(model.base), "--out", CHAT_TEMPLATE],
        "terminationMessagePolicy": "FallbackToLogsOnError",  # its error line reaches the pod status
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [*claims, {"name": "chat-template", "mountPath": CHAT_TEMPLATE_MOUNT}],
    }


def startup_budget_seconds(params_b: float | None) -> int:
    """Weights must load before /health answers: 5 min plus ~20 s per billion parameters (unknown: 15 min)."""
    if params_b is None:
        return 900
    return int(300 + 20 * params_b)


def serve_labels(owner: Owner) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelforge-serve",
        "app.kubernetes.io/instance": label_value(owner.name),
        "app.kubernetes.io/component": "serving",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "modelforge.io/serve": label_value(owner.name),
    }


@dataclass(frozen=True)
class ServeObjects:
    deployment: dict[str, Any]
    service: dict[str, Any]
    spec_hash: str
    adapters: dict[str, Any] | None = None  # the ConfigMap of live adapters (vLLM with LoRA enabled)


def render_serve(owner: Owner, spec: ModelServeSpec, model: ResolvedModel, settings: RenderSettings) -> ServeObjects:
    engine = engine_for(spec)
    served_name = spec.served_model_name or owner.name
    labels = serve_labels(owner)
    gpus = gpus_per_replica(spec)
    command, args = engine.container_command(spec, model, served_name)
    env: list[dict[str, Any]] = [
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        # engine swift: a model's own code only with spec.model.trustRemoteCode (launcher/remote_code.py)
        {"name": TRUST_REMOTE_CODE_ENV, "value": "1" if spec.model.trust_remote_code else "0"},
    ]
    key_env: list[dict[str, Any]] = []
    if spec.api_key_secret_ref:
        ref = {"secretKeyRef": {"name": spec.api_key_secret_ref.name, "key": spec.api_key_secret_ref.key}}
        key_env.append({"name": engine.api_key_env(), "valueFrom": ref})
    env += key_env
    if engine.name == "vllm" and from_hub(spec, model) and spec.model.hub == Hub.MODELSCOPE:
        env.append({"name": "VLLM_USE_MODELSCOPE", "value": "True"})
    manage = manages_adapters(spec, model)
    if manage:
        env.append({"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"})
    resources: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    if gpus:
        resources["requests"][spec.resources.gpu_resource_name] = str(gpus)
        resources["limits"][spec.resources.gpu_resource_name] = str(gpus)
    for key, value in (("cpu", spec.resources.cpu), ("memory", spec.resources.memory)):
        if value is not None:
            resources["requests"][key] = resources["limits"][key] = str(value)
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(spec.resources.shared_memory or "8Gi")}}
    ]
    claim_mounts: list[dict[str, Any]] = []  # the engine's, and the chat-template step's
    for claim in model.claims():
        volume = label_value(f"pvc-{claim}".replace(".", "-"))
        volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        claim_mounts.append({"name": volume, "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True})
    mounts += claim_mounts
    init_containers = []
    if wraps_chat_template(spec, model):
        init_containers.append(chat_template_container(model, settings, claim_mounts))
        volumes.append({"name": "chat-template", "emptyDir": {"sizeLimit": "16Mi"}})
        mounts.append({"name": "chat-template", "mountPath": CHAT_TEMPLATE_MOUNT, "readOnly": True})
    budget = startup_budget_seconds(model.params_b)
    probe = {"httpGet": {"path": "/health", "port": "http"}}
    container = {
        "name": "engine",
        "image": spec.resources.image or getattr(settings, engine.image_setting),
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "args": args,
        "env": env,
        "ports": [{"name": "http", "containerPort": API_PORT}],
        "resources": resources,
        "volumeMounts": mounts,
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": max(3, -(-budget // 10))},
        "readinessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 30, "failureThreshold": 4},
    }
    containers = [container]
    if manage or spec.api_key_secret_ref:  # without either, the operator reads /v1/models itself
        containers.append(agent_container(spec, engine, manage, settings, key_env))
    if manage:
        volumes.append({"name": "adapters", "configMap": {"name": adapters_name(owner.name)}})
    pod_spec: dict[str, Any] = {"containers": containers, "volumes": volumes}
    if init_containers:
        pod_spec["initContainers"] = init_containers
    placement: dict[str, Any] = {
        "nodeSelector": spec.resources.node_selector,
        "tolerations": spec.resources.tolerations,
        "affinity": spec.resources.affinity,
        "priorityClassName": spec.resources.priority_class_name,
    }
    pod_spec.update({key: value for key, value in placement.items() if value})
    harden(pod_spec, spec.resources.security, settings, main="engine")
    template = {"metadata": {"labels": labels}, "spec": pod_spec}
    # The hash covers what a change must roll or rescale: the pod template and the replica count.
    hashed = {"template": template, "replicas": spec.replicas}
    spec_hash = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]
    meta = {"name": owner.name, "namespace": owner.namespace, "labels": labels,
            "annotations": {SPEC_HASH: spec_hash}, "ownerReferences": [owner.reference()]}  # fmt: skip
    template["metadata"]["annotations"] = {SPEC_HASH: spec_hash}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": {"modelforge.io/serve": labels["modelforge.io/serve"]}},
            "strategy": {"type": "Recreate"} if gpus else {"type": "RollingUpdate"},
            "template": template,
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {k: v for k, v in meta.items() if k != "annotations"},
        "spec": {
            "type": spec.service.type.value,
            "selector": {"modelforge.io/serve": labels["modelforge.io/serve"]},
            "ports": [{"name": "http", "port": spec.service.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return ServeObjects(deployment, service, spec_hash, adapters_config(owner, model, labels) if manage else None)
