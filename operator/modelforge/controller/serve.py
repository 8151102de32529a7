"""kopf reconcile for ModelServe: resolve the model (waiting for a FineTuneJob if need be), validate,
apply the Deployment and Service, observe replicas and /v1/models, patch status."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import kopf

from ..api.conditions import ConditionType, Reason
from ..api.modelserve import ModelServeSpec, ServePhase
from ..api.validate import SpecError, parse_resource
from ..plan.lifecycle import set_condition
from ..plan.models import architecture
from ..plan.serving import ServeObserved, resolve_from_job, serve_problems, serve_status
from ..render.names import label_value
from ..render.serving import API_PORT, SPEC_HASH, ResolvedModel, render_serve
from ..render.training import Owner
from .bodies import document_of, patch_changed
from .kube import Kube, fetch_json
from .reconcilers import StatusPatch


@dataclasses.dataclass
class _Status:
    """The new status being built, and the events to post."""

    old: dict[str, Any]
    now: datetime
    new: dict[str, Any] = dataclasses.field(default_factory=dict)
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.new = {k: v for k, v in self.old.items()}

    def condition(self, kind: ConditionType, ok: bool, reason: Reason | str, message: str) -> None:
        self.new["conditions"] = set_condition(
            self.new.get("conditions") or [], kind, ok, reason, message, self.now, self.new.get("observedGeneration")
        )

    def phase(self, phase: ServePhase, reason: Reason | str, message: str) -> None:
        self.new["phase"] = phase.value
        if self.old.get("phase") != phase.value:
            warning = phase in (ServePhase.FAILED, ServePhase.DEGRADED)
            self.events.append(("Warning" if warning else "Normal", str(reason), message))


def _resolve(kube: Kube, namespace: str, spec: ModelServeSpec) -> tuple[ResolvedModel | None, str, str, bool]:
    """(model or None, why, the id to look the architecture up by, whether a FineTuneJob it needs failed)."""
    if spec.model.from_fine_tune_job:
        job_name = spec.model.from_fine_tune_job
        job = kube.get_finetunejob(namespace, job_name)
        model, why = resolve_from_job(job_name, job)
        arch_id = (job or {}).get("spec", {}).get("model", {}).get("source", job_name)
        if model is None:
            return None, why, arch_id, _failed(job)
    else:
        model, why, arch_id = ResolvedModel(str(spec.model.source)), "", str(spec.model.source)
    adapters = list(model.adapters)
    for adapter in spec.adapters or []:
        if adapter.source:
            adapters.append((adapter.name, adapter.source))
            continue
        job_name = str(adapter.from_fine_tune_job)
        adapter_job = kube.get_finetunejob(namespace, job_name)
        trained, adapter_why = resolve_from_job(job_name, adapter_job)
        if trained is None:
            return None, adapter_why, arch_id, _failed(adapter_job)
        if not trained.adapters:
            return None, f"FineTuneJob {job_name} produced no adapter (method full or merged only)", arch_id, True
        adapters.append((adapter.name, trained.adapters[0][1]))
    return dataclasses.replace(model, adapters=tuple(adapters)), why, arch_id, False


def _failed(job: dict[str, Any] | None) -> bool:
    """The job's phase says Failed (not its name: a job called `failed-run` may well be running)."""
    return ((job or {}).get("status") or {}).get("phase") == "Failed"


def _observe(kube: Kube, namespace: str, name: str, spec: ModelServeSpec, timeout: float) -> ServeObserved:
    deployment = kube.get_deployment(namespace, name)
    pods = tuple(kube.list_pods(namespace, {"modelforge.io/serve": label_value(name)}))
    reported, unreachable = None, None
    if not spec.api_key_secret_ref:
        asked = []
        for pod in pods:
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in pod.get("status", {}).get("conditions") or [])  # fmt: skip
            ip = pod.get("status", {}).get("podIP")
            if ready and ip:
                url = f"http://{ip}:{API_PORT}/v1/models"
                data = fetch_json(url, timeout)
                asked.append(url)
                if data is not None:
                    reported = tuple(str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict))
                    break
        if reported is None and asked:
            unreachable = f"{asked[0]} does not answer"
    last_line = None
    for pod in pods:
        for container in pod.get("status", {}).get("containerStatuses") or []:
            if (container.get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
                last_line = kube.pod_log_tail(namespace, pod["metadata"]["name"], container.get("name", "engine"))
    return ServeObserved(deployment, pods, reported, last_line, unreachable)


def reconcile_serve(body: kopf.Body, patch: StatusPatch, memo: Any, logger: Any = None) -> None:
    kube: Kube = memo.kube
    name, namespace = body.metadata.name, str(body.metadata.namespace)
    st = _Status(dict(body.get("status") or {}), datetime.now(UTC).replace(tzinfo=None))
    st.new["observedGeneration"] = body.metadata.get("generation")
    try:
        spec: ModelServeSpec = parse_resource(document_of(body)).spec
    except SpecError as exc:
        message = "; ".join(str(p) for p in exc.problems)
        st.condition(ConditionType.READY, False, Reason.INVALID_SPEC, message)
        st.phase(ServePhase.FAILED, Reason.INVALID_SPEC, message)
        _finish(body, patch, st, kube)
        return

    model, why, arch_id, job_failed = _resolve(kube, namespace, spec)
    if model is None:
        st.condition(ConditionType.MODEL_AVAILABLE, False, Reason.WAITING_FOR_MODEL, why)
        st.condition(ConditionType.READY, False, Reason.WAITING_FOR_MODEL, why)
        st.phase(ServePhase.FAILED if job_failed else ServePhase.PENDING, Reason.WAITING_FOR_MODEL, why)
        _finish(body, patch, st, kube)
        return
    st.condition(ConditionType.MODEL_AVAILABLE, True, Reason.SERVING, why or f"serving {model.base}")
    arch = architecture(arch_id)
    problems, notes = serve_problems(spec, arch, arch_id)
    if problems:
        message = "; ".join(problems)
        st.condition(ConditionType.READY, False, Reason.INVALID_SPEC, message)
        st.phase(ServePhase.FAILED, Reason.INVALID_SPEC, message)
        _finish(body, patch, st, kube)
        return

    model = dataclasses.replace(model, params_b=arch.params_b if arch else None)
    owner = Owner("ModelServe", name, namespace, body.metadata.uid)
    objects = render_serve(owner, spec, model, memo.config.render)
    # Server-side apply (field manager `modelforge`) on every reconcile: spec changes reach the Deployment
    # and the Service (port, type, labels), hand edits of fields we own are reverted, and an unchanged
    # object is not touched by the API server (no new generation, no rollout).
    existing = kube.get_deployment(namespace, name)
    kube.apply(objects.deployment)
    if (
        existing is not None
        and (existing.get("metadata", {}).get("annotations") or {}).get(SPEC_HASH) != objects.spec_hash
    ):
        st.events.append(("Normal", "Rolling", "the spec changed: rolling the Deployment"))
    _keep_ports(kube, namespace, name, objects.service["spec"]["ports"])
    kube.apply(objects.service)

    observed = _observe(kube, namespace, name, spec, memo.config.progress_timeout_seconds)
    served_name = spec.served_model_name or name
    endpoint = f"http://{name}.{namespace}.svc:{spec.service.port}/v1"
    adapter_names = tuple(n for n, _ in model.adapters)
    phase, conditions, fields = serve_status(spec, served_name, adapter_names, observed, endpoint)
    for kind, ok, reason, message in conditions:
        st.condition(kind, ok, reason, message + ("; " + "; ".join(notes) if notes else ""))
    st.new.update(fields)
    st.new["modelPath"] = model.base
    ready_message = next((m for k, _, _, m in conditions if k == ConditionType.READY), "")
    st.phase(phase, next((r for k, _, r, _ in conditions if k == ConditionType.READY), Reason.SERVING), ready_message)
    _finish(body, patch, st, kube)


def _keep_ports(kube: Kube, namespace: str, name: str, desired: list[dict[str, Any]]) -> None:
    """Ports edited by hand are reverted (server-side apply alone would keep them beside ours)."""
    existing = kube.get_service(namespace, name)
    if existing is None:
        return
    key = ("name", "port", "protocol", "targetPort")
    current = [{k: p.get(k) for k in key} for p in existing.get("spec", {}).get("ports") or []]
    if current != [{k: p.get(k) for k in key} for p in desired]:
        kube.replace_service_ports(namespace, name, desired)


def _finish(body: kopf.Body, patch: StatusPatch, st: _Status, kube: Kube) -> None:
    for kind, reason, message in st.events:
        patch.events.append((kind, reason, message))  # posted once the status is written
    patch_changed(patch, st.old, st.new)


def modelserve_from_job(job_name: str, namespace: str, template: dict[str, Any]) -> dict[str, Any]:
    """The ModelServe a FineTuneJob's spec.serve asks for. No owner reference: deleting the job keeps it."""
    spec = dict(template.get("spec") or {})
    spec.setdefault("model", {"fromFineTuneJob": job_name})
    return {
        "apiVersion": "modelforge.io/v1alpha1",
        "kind": "ModelServe",
        "metadata": {"name": template.get("name") or job_name, "namespace": namespace,
                     "labels": {"modelforge.io/from-job": label_value(job_name)}},
        "spec": spec,
    }  # fmt: skip
