"""Pure checks and resolution for a ModelServe, before anything is created."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..api.conditions import ConditionType, Reason
from ..api.finetunejob import FineTuneJobSpec, Method
from ..api.modelserve import Engine, ModelServeSpec, ModelServeStatus, ServePhase
from ..paths import split_uri
from .adapters import LOADED, LOADING, AdapterResult, combine
from .models import Architecture, architecture
from .outputs import output_paths, output_root_uri
from .phases import not_promoted, serve_phase, set_condition, without_refusals
from .pods import pod_trouble

SERVE_OOM_ADVICE = "raise resources.memory, lower maxModelLen or gpuMemoryUtilization, or raise tensorParallel"


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


def from_hub(spec: ModelServeSpec, model: ResolvedModel) -> bool:
    """The base model is spec.model.source and a hub id (not a path, not a claim): hub and revision apply."""
    source = spec.model.source
    return bool(source) and model.base == source and not split_uri(str(source)) and not str(source).startswith("/")


# The chat-template variable that carries spec.systemPrompt to vLLM (launcher/chat_template.py reads it).
SYSTEM_VARIABLE = "modelforge_system"


def wraps_chat_template(spec: ModelServeSpec, model: ResolvedModel) -> bool:
    """vLLM with spec.systemPrompt: an init container wraps the model's chat template (launcher/chat_template.py)
    so that the engine adds the prompt. It needs the model's files in the pod, so not for a hub model."""
    on_files = bool(split_uri(model.base)) or model.base.startswith("/")  # a claim or a path, never a hub id
    return bool(spec.system_prompt) and spec.engine == Engine.VLLM and on_files


def manages_adapters(spec: ModelServeSpec, model: ResolvedModel) -> bool:
    """vLLM with LoRA enabled: adapters are loaded live by the serve agent (no rollout), not in its argv.
    swift deploy has no runtime adapter API, so its adapters are arguments and a change rolls the pods."""
    return spec.engine == Engine.VLLM and bool(model.adapters or spec.max_loras)


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
    blocked = not_promoted(status.get("conditions") or [])
    if blocked is not None:
        why = str(blocked.get("message") or blocked.get("reason")).removeprefix("not promoted: ")
        return None, f"FineTuneJob {job_name} is not promoted: {why}"
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
    root = output_root_uri(job_name, spec)
    return output_paths(root, spec) if root is not None else {}


@dataclass(frozen=True)
class ServeObserved:
    deployment: dict[str, Any] | None = None
    pods: tuple[dict[str, Any], ...] = ()
    reported_models: tuple[str, ...] | None = None  # /v1/models of a ready replica; None when not read
    last_log_line: str | None = None  # of a crashing engine container
    # Set when /v1/models could be asked (no API key, or a serve agent) but no ready replica answered it.
    models_unreachable: str | None = None
    # The FineTuneJobs the spec names (model.fromFineTuneJob, adapters[].fromFineTuneJob), None when absent.
    jobs: Mapping[str, dict[str, Any] | None] = field(default_factory=dict)
    # The serve agents' reports (GET :8091/adapters), one per ready replica that has an agent.
    agent_reports: tuple[dict[str, Any], ...] = ()


def jobs_named(spec: ModelServeSpec) -> list[str]:
    """The FineTuneJobs a ModelServe reads its model or adapters from (what the controller must fetch)."""
    names = [spec.model.from_fine_tune_job] if spec.model.from_fine_tune_job else []
    names += [str(a.from_fine_tune_job) for a in spec.adapters or [] if not a.source]
    return list(dict.fromkeys(names))


def _waiting_reason(job: dict[str, Any] | None) -> Reason:
    """Why a ModelServe has no model from this job: it failed (its phase says so, not its name: a job called
    `failed-run` may well be running), its evaluation did not promote its output, or it has not finished."""
    status = (job or {}).get("status") or {}
    if status.get("phase") == "Failed":
        return Reason.MODEL_FAILED
    if status.get("phase") == "Succeeded" and not_promoted(status.get("conditions") or []) is not None:
        return Reason.NOT_PROMOTED
    return Reason.WAITING_FOR_MODEL


def resolve_model(
    spec: ModelServeSpec, jobs: Mapping[str, dict[str, Any] | None]
) -> tuple[ResolvedModel | None, str, str, Reason]:
    """(model or None, why, the id to look the architecture up by, the reason: Resolved, or why there is no
    model: WaitingForModel, ModelFailed or NotPromoted)."""
    if spec.model.from_fine_tune_job:
        job_name = spec.model.from_fine_tune_job
        job = jobs.get(job_name)
        model, why = resolve_from_job(job_name, job)
        arch_id = (job or {}).get("spec", {}).get("model", {}).get("source", job_name)
        if model is None:
            return None, why, arch_id, _waiting_reason(job)
    else:
        model, why, arch_id = ResolvedModel(str(spec.model.source)), "", str(spec.model.source)
    adapters = list(model.adapters)
    for adapter in spec.adapters or []:
        if adapter.source:
            adapters.append((adapter.name, adapter.source))
            continue
        job_name = str(adapter.from_fine_tune_job)
        adapter_job = jobs.get(job_name)
        trained, adapter_why = resolve_from_job(job_name, adapter_job)
        if trained is None:
            return None, f"adapter {adapter.name}: {adapter_why}", arch_id, _waiting_reason(adapter_job)
        if not trained.adapters:
            return (None, f"FineTuneJob {job_name} produced no adapter (method full or merged only)", arch_id,
                    Reason.MODEL_FAILED)  # fmt: skip
        adapters.append((adapter.name, trained.adapters[0][1]))
    return dataclasses.replace(model, adapters=tuple(adapters)), why, arch_id, Reason.RESOLVED


def serve_status(
    spec: ModelServeSpec,
    served_name: str,
    adapters: tuple[str, ...],
    observed: ServeObserved,
    endpoint: str,
    live_adapters: tuple[AdapterResult, ...] = (),
) -> tuple[ServePhase, list[tuple[ConditionType, bool, Reason, str]], dict[str, Any]]:
    """(phase it leads to, conditions to set, other status fields) of a ModelServe whose children exist.
    The phase returned is the one `serve_phase` derives from these conditions (a table-tested promise)."""
    status = observed.deployment.get("status", {}) if observed.deployment else {}
    ready = int(status.get("readyReplicas") or 0)
    fields: dict[str, Any] = {"readyReplicas": ready, "endpoint": endpoint}
    conditions: list[tuple[ConditionType, bool, Reason, str]] = []
    trouble = pod_trouble(observed.pods, SERVE_OOM_ADVICE)
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
    live = {a.name: a for a in live_adapters}
    if live:
        fields["adapters"] = [a.wire() for a in live_adapters]
    if observed.reported_models is None and observed.models_unreachable:
        # Pods report Ready but the engine's API does not answer: not serving yet (found on the cluster
        # tier: this used to say Ready, "models not verified").
        message = f"{ready} replica(s) Ready but {observed.models_unreachable}"
        conditions.append((ConditionType.READY, False, Reason.LOADING, message))
        return ServePhase.LOADING, conditions, fields
    if observed.reported_models is not None:
        fields["models"] = list(observed.reported_models)[:64]
        missing = [m for m in expected if m not in observed.reported_models]
        if missing:
            named = [f"{m} ({live[m].state}: {live[m].message})" if m in live and live[m].message else m
                     for m in missing]  # fmt: skip
            message = f"/v1/models does not list {', '.join(named)} (serving: {', '.join(observed.reported_models)})"
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


def _with_agent_models(observed: ServeObserved) -> ServeObserved:
    """The models every replica serves, from the serve agents' reports (they hold the API key, not us)."""
    if not observed.agent_reports or observed.reported_models is not None:
        return observed
    answering = [r for r in observed.agent_reports if r.get("engineReady")]
    if not answering:
        return dataclasses.replace(observed, models_unreachable="the engine does not answer its serve agent yet")
    common = [m for m in answering[0].get("models") or [] if all(m in (r.get("models") or []) for r in answering)]
    return dataclasses.replace(observed, reported_models=tuple(common))


@dataclass
class ServeDecision:
    status: ModelServeStatus  # validated against the model the CRD's status schema comes from
    model: ResolvedModel | None = None  # what the children load; None: no children this time
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (Normal|Warning, reason, message)

    @property
    def wire(self) -> dict[str, Any]:
        return self.status.to_wire()


class _ServeBuilder:
    def __init__(self, current: ModelServeStatus, now: datetime, generation: int | None):
        self.old = current.to_wire()
        self.status = json.loads(json.dumps(self.old))
        if self.status.get("conditions"):
            self.status["conditions"] = without_refusals(self.status["conditions"])
        self.now = now
        if generation is not None:
            self.status["observedGeneration"] = generation
        self.events: list[tuple[str, str, str]] = []

    def condition(self, kind: ConditionType, ok: bool, reason: Reason | str, message: str) -> None:
        self.status["conditions"] = set_condition(self.status.get("conditions") or [], kind, ok, reason, message,
                                                  self.now, self.status.get("observedGeneration"))  # fmt: skip

    def done(self, model: ResolvedModel | None = None) -> ServeDecision:
        phase = serve_phase(self.status.get("conditions") or [])
        self.status["phase"] = phase.value
        if serve_phase(self.old.get("conditions") or []) != phase or self.old.get("phase") != phase.value:
            kind = ConditionType.DEGRADED if phase == ServePhase.DEGRADED else ConditionType.READY
            why = next((c for c in self.status["conditions"] if c["type"] == kind), None)
            reason, message = (why["reason"], why["message"]) if why else (phase.value, phase.value)
            warning = phase in (ServePhase.FAILED, ServePhase.DEGRADED)
            self.events.append(("Warning" if warning else "Normal", reason, message))
        return ServeDecision(ModelServeStatus.model_validate(self.status), model, self.events)


def decide_serve(
    name: str,
    namespace: str,
    spec: ModelServeSpec | None,
    problems: list[str],
    current: ModelServeStatus | Mapping[str, Any],
    observed: ServeObserved,
    now: datetime,
    generation: int | None = None,
) -> ServeDecision:
    """The new status of one ModelServe and the model its children load (None: create none now).

    Observe -> decide -> apply: the controller observes (FineTuneJobs, Deployment, pods, /v1/models),
    this decides, and render turns `model` into the Deployment and Service it applies."""
    if not isinstance(current, ModelServeStatus):
        current = ModelServeStatus.model_validate(dict(current))
    b = _ServeBuilder(current, now, generation)
    for key in ("models", "adapters"):  # what the replicas serve is said afresh each time, never kept stale
        b.status.pop(key, None)
    if spec is None or problems:
        message = "; ".join(problems) or "the spec could not be read"
        b.condition(ConditionType.READY, False, Reason.INVALID_SPEC, message)
        return b.done()
    model, why, arch_id, reason = resolve_model(spec, observed.jobs)
    if model is None:
        b.condition(ConditionType.MODEL_AVAILABLE, False, reason, why)
        b.condition(ConditionType.READY, False, reason, why)
        return b.done()
    # True: the model resolves; Serving only once an engine lists it (below), never before anything verified it.
    resolved = why or f"the model is {model.base}"
    b.condition(ConditionType.MODEL_AVAILABLE, True, Reason.RESOLVED, f"{resolved}; no engine has listed it yet")
    arch = architecture(arch_id)
    refused, notes = serve_problems(spec, arch, arch_id)
    if refused:
        b.condition(ConditionType.READY, False, Reason.INVALID_SPEC, "; ".join(refused))
        return b.done()
    model = dataclasses.replace(model, params_b=arch.params_b if arch else None)
    if manages_adapters(spec, model) and not spec.api_key_secret_ref:
        notes.append("live adapters without apiKeySecretRef: vLLM's runtime LoRA API is on the serving port, so "
                     "anyone who reaches the Service can load or unload adapters; set apiKeySecretRef")  # fmt: skip
    if spec.system_prompt and spec.engine == Engine.VLLM and not wraps_chat_template(spec, model):
        # Said, not silently dropped: the template is wrapped from the model's files, which a hub model
        # only has once vLLM has downloaded it inside the engine.
        notes.append("spec.systemPrompt is not applied by engine vllm to a hub model (serve it from a claim or a "
                     "FineTuneJob's output, or send a system message from the client)")  # fmt: skip
    problems_seen = sorted({str(r["problem"])[:500] for r in observed.agent_reports if r.get("problem")})
    notes += [f"serve agent: {p} (the adapters loaded before stay loaded)" for p in problems_seen]
    observed = _with_agent_models(observed)
    served_name = spec.served_model_name or name
    endpoint = f"http://{name}.{namespace}.svc:{spec.service.port}/v1"
    names = tuple(n for n, _ in model.adapters)
    live: tuple[AdapterResult, ...] = ()
    if manages_adapters(spec, model):
        if observed.agent_reports:
            live = tuple(combine(observed.agent_reports, names))
        elif observed.reported_models is not None:  # no agent answered, but the engine itself did
            live = tuple(AdapterResult(n, LOADED if n in observed.reported_models else LOADING) for n in names)
    _, conditions, fields = serve_status(spec, served_name, names, observed, endpoint, live)
    if observed.reported_models is not None and served_name in observed.reported_models:
        b.condition(
            ConditionType.MODEL_AVAILABLE, True, Reason.SERVING, f"/v1/models lists {served_name}: {model.base}"
        )
    for kind, ok, reason, message in conditions:
        b.condition(kind, ok, reason, message + ("; " + "; ".join(notes) if notes else ""))
    b.status.update(fields)
    b.status["modelPath"] = model.base
    return b.done(model)
