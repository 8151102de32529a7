"""Pure checks and resolution for a ModelServe, before anything is created."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api.conditions import ConditionType, Reason
from ..api.finetunejob import FineTuneJobSpec, Method
from ..api.modelserve import ModelServeSpec, ServePhase
from ..paths import split_uri
from .models import Architecture


@dataclass(frozen=True)
class ResolvedModel:
    """What to load: the base model and adapters as sources (hub id, pvc://, or a path)."""

    base: str
    adapters: tuple[tuple[str, str], ...] = ()  # (served name, source)
    params_b: float | None = None  # model size, for the startup budget

    def claims(self) -> list[str]:
        found = []
        for source in (self.base, *(s for _, s in self.adapters)):
            split = split_uri(source)
            if split and split[0] == "pvc" and split[1] not in found:
                found.append(split[1])
        return found


def gpus_per_replica(spec: ModelServeSpec) -> int:
    if spec.resources.gpus_per_replica is not None:
        return spec.resources.gpus_per_replica
    return spec.tensor_parallel * spec.pipeline_parallel


def engine_problems(spec: ModelServeSpec) -> list[str]:
    """Spec fields the chosen engine cannot honour (refused before anything is created)."""
    if spec.engine.value != "swift":
        return []
    vllm_only = {
        "spec.quantization": spec.quantization,
        "spec.maxLoras": spec.max_loras,
        "spec.maxLoraRank": spec.max_lora_rank,
    }
    return [f"{field_}: not supported by engine swift (use engine vllm)" for field_, v in vllm_only.items() if v]


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def serve_problems(spec: ModelServeSpec, arch: Architecture | None, model_name: str) -> tuple[list[str], list[str]]:
    """(problems that stop the serve, notes worth showing) for a spec and the model it will load."""
    problems = engine_problems(spec)
    notes: list[str] = []
    tp = spec.tensor_parallel
    if arch is None:
        notes.append(f"attention heads of {model_name} unknown: tensorParallel {tp} not checked")
    elif arch.heads % tp:
        options = ", ".join(str(d) for d in divisors(arch.heads) if d <= 16)
        problems.append(
            f"spec.tensorParallel: {tp} does not divide the {arch.heads} attention heads of {model_name}; "
            f"use one of {options} (e.g. {tp} GPUs: tensorParallel {max(d for d in divisors(arch.heads) if d <= tp)}"
            f" per replica, or {tp} replicas with tensorParallel 1)"
        )
    gpus = gpus_per_replica(spec)
    node = spec.resources.gpus_per_node
    if node is not None and gpus > node:
        problems.append(
            f"spec.tensorParallel x pipelineParallel = {gpus} GPUs per replica, but resources.gpusPerNode is {node}: "
            "a replica must fit on one node (lower tensorParallel, or use pipelineParallel across replicas)"
        )
    return problems, notes


def resolve_from_job(job_name: str, job: dict[str, Any] | None) -> tuple[ResolvedModel | None, str]:
    """The model a succeeded FineTuneJob produced, or (None, why we wait / cannot)."""
    if job is None:
        return None, f"FineTuneJob {job_name} does not exist (yet)"
    status = job.get("status") or {}
    phase = status.get("phase")
    if phase == "Failed":
        return None, f"FineTuneJob {job_name} failed: nothing to serve"
    if phase != "Succeeded":
        return None, f"waiting for FineTuneJob {job_name} to succeed (phase {phase or 'Pending'})"
    outputs = status.get("outputs") or {}
    spec = FineTuneJobSpec.model_validate(job["spec"])
    if outputs.get("mergedModel"):
        return ResolvedModel(outputs["mergedModel"]), "serving the merged model"
    if outputs.get("model"):
        return ResolvedModel(outputs["model"]), "serving the fully fine-tuned model"
    if outputs.get("adapter") and spec.method != Method.FULL:
        return ResolvedModel(spec.model.source, ((job_name, outputs["adapter"]),)), "base model + trained adapter"
    return None, f"FineTuneJob {job_name} succeeded but recorded no outputs"


def predicted_outputs(job_name: str, spec: FineTuneJobSpec) -> dict[str, str]:
    """Where a job's outputs will be (for `modelforge render` before the job has run)."""
    if spec.output is None:
        return {}
    root = f"pvc://{spec.output.claim_name}/{spec.output.sub_path or job_name}"
    if spec.method == Method.FULL:
        return {"model": f"{root}/run/last-checkpoint"}
    outputs = {"adapter": f"{root}/run/last-checkpoint"}
    if spec.output.merge:
        outputs["mergedModel"] = f"{root}/merged"
    return outputs


@dataclass(frozen=True)
class ServeObserved:
    deployment: dict[str, Any] | None = None
    pods: tuple[dict[str, Any], ...] = ()
    reported_models: tuple[str, ...] | None = None  # /v1/models of a ready replica; None when not read
    last_log_line: str | None = None  # of a crashing engine container
    # Set when /v1/models could be asked (no API key) but no ready replica answered it.
    models_unreachable: str | None = None


def _pod_trouble(pods: tuple[dict[str, Any], ...]) -> tuple[Reason, str] | None:
    """The most telling reason a replica is not serving: OOMKilled, CrashLoopBackOff, unschedulable, pull."""
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        for container in pod.get("status", {}).get("containerStatuses") or []:
            last = (container.get("lastState") or {}).get("terminated") or {}
            state = container.get("state") or {}
            if last.get("reason") == "OOMKilled" or (state.get("terminated") or {}).get("reason") == "OOMKilled":
                return Reason.OOM_KILLED, (
                    f"pod {name}: the engine ran out of memory while loading (OOMKilled); raise resources.memory, "
                    "lower maxModelLen or gpuMemoryUtilization, or raise tensorParallel"
                )
            waiting = state.get("waiting") or {}
            if waiting.get("reason") == "CrashLoopBackOff":
                return Reason.CRASH_LOOP_BACK_OFF, f"pod {name}: the engine keeps crashing"
            if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                return Reason.IMAGE_PULL_BACK_OFF, f"pod {name}: {waiting.get('message') or 'cannot pull the image'}"
        for condition in pod.get("status", {}).get("conditions") or []:
            if (condition.get("type"), condition.get("status"), condition.get("reason")) == (
                "PodScheduled", "False", "Unschedulable"
            ):  # fmt: skip
                return Reason.UNSCHEDULABLE, f"pod {name}: {condition.get('message', '')}"
    return None


def serve_status(
    spec: ModelServeSpec,
    served_name: str,
    adapters: tuple[str, ...],
    observed: ServeObserved,
    endpoint: str,
) -> tuple[ServePhase, list[tuple[ConditionType, bool, Reason, str]], dict[str, Any]]:
    """(phase, conditions to set, other status fields) of a ModelServe whose children exist."""
    status = observed.deployment.get("status", {}) if observed.deployment else {}
    ready = int(status.get("readyReplicas") or 0)
    fields: dict[str, Any] = {"readyReplicas": ready, "endpoint": endpoint}
    conditions: list[tuple[ConditionType, bool, Reason, str]] = []
    trouble = _pod_trouble(observed.pods)
    if ready == 0:
        conditions.append((ConditionType.DEGRADED, False, Reason.LOADING, "no replica is serving yet"))
        if spec.replicas == 0:
            conditions.append((ConditionType.READY, False, Reason.SERVING, "scaled to zero replicas"))
            return ServePhase.PENDING, conditions, fields
        if trouble and trouble[0] in (Reason.OOM_KILLED, Reason.CRASH_LOOP_BACK_OFF):
            message = trouble[1] + (f"; last log line: {observed.last_log_line}" if observed.last_log_line else "")
            conditions.append((ConditionType.READY, False, trouble[0], message))
            return ServePhase.FAILED, conditions, fields
        if trouble:
            conditions.append((ConditionType.READY, False, trouble[0], trouble[1]))
            return ServePhase.PENDING, conditions, fields
        message = "loading the model (the API answers once the weights are loaded)"
        conditions.append((ConditionType.READY, False, Reason.LOADING, message))
        return ServePhase.LOADING, conditions, fields

    expected = (served_name, *adapters)
    if observed.reported_models is None and observed.models_unreachable:
        # Pods report Ready but the engine's API does not answer: not serving yet (found on the cluster
        # tier: this used to say Ready, "models not verified").
        message = f"{ready} replica(s) Ready but {observed.models_unreachable}"
        conditions.append((ConditionType.READY, False, Reason.LOADING, message))
        return ServePhase.LOADING, conditions, fields
    if observed.reported_models is not None:
        fields["models"] = list(observed.reported_models)
        missing = [m for m in expected if m not in observed.reported_models]
        if missing:
            message = f"/v1/models does not list {', '.join(missing)} (serving: {', '.join(observed.reported_models)})"
            conditions.append((ConditionType.READY, True, Reason.SERVING, f"{ready} replica(s) answering"))
            conditions.append((ConditionType.DEGRADED, True, Reason.ADAPTER_MISSING, message))
            return ServePhase.DEGRADED, conditions, fields
    if ready < spec.replicas:
        message = f"{ready}/{spec.replicas} replicas ready" + (f"; {trouble[1]}" if trouble else "")
        conditions.append((ConditionType.READY, True, Reason.SERVING, message))
        conditions.append((ConditionType.DEGRADED, True, trouble[0] if trouble else Reason.LOADING, message))
        return ServePhase.DEGRADED, conditions, fields
    verified = "" if observed.reported_models is not None else " (models not verified: /v1/models needs the API key)"
    conditions.append((ConditionType.READY, True, Reason.SERVING, f"{ready} replica(s) serving {', '.join(expected)}"
                       + verified))  # fmt: skip
    conditions.append((ConditionType.DEGRADED, False, Reason.SERVING, "all replicas ready, all models listed"))
    return ServePhase.READY, conditions, fields
