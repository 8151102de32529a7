"""`modelforge render`: the children the operator creates for a document, from the same desired-state
functions the operator calls (render/desired.py), with nothing observed yet."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..api.finetunejob import FineTuneJobSpec, FineTuneJobStatus, JobPhase
from ..api.modelserve import ModelServeStatus
from ..api.validate import parse_resource
from ..plan.capacity import PlanSettings
from ..plan.lifecycle import Observed
from ..plan.serving import ServeObserved, jobs_named, predicted_outputs
from .desired import attempt_children, desired_finetunejob, desired_modelserve
from .settings import RenderSettings
from .training import Owner

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def _message(status: FineTuneJobStatus | ModelServeStatus, kind: str) -> str:
    return next((c.message for c in status.conditions or [] if c.type == kind), "")


def predicted_job(name: str, spec: FineTuneJobSpec) -> dict[str, Any]:
    """A FineTuneJob as it will look once it succeeded: its spec and the outputs it will record."""
    return {"spec": spec.to_wire(), "status": {"phase": "Succeeded", "outputs": predicted_outputs(name, spec)}}


def render_resource(
    doc: dict[str, Any],
    settings: RenderSettings,
    *,
    attempt: int = 1,
    namespace: str = "default",
    jobs: dict[str, FineTuneJobSpec] | None = None,
    plan_settings: PlanSettings | None = None,
) -> list[dict[str, Any]]:
    """Children of a validated document. A ModelServe that serves a FineTuneJob is rendered with the
    job's predicted outputs when that job is among `jobs`. Raises ValueError with the reason the operator
    would give (naming the field) when it would create nothing."""
    parsed = parse_resource(doc)
    uid = doc["metadata"].get("uid") or PLACEHOLDER_UID
    owner = Owner(parsed.resource.kind, parsed.name, parsed.namespace or namespace, uid)
    now = datetime.now(UTC).replace(tzinfo=None)
    plan_settings = plan_settings or PlanSettings()
    if parsed.resource.kind == "FineTuneJob":
        first = desired_finetunejob(owner, parsed.spec, [], {}, Observed(), now, None, plan_settings, settings)
        if first.status.phase == JobPhase.FAILED:
            raise ValueError("the operator would refuse it before any pod: " + _message(first.status, "Failed"))
        if attempt == 1:
            return first.children
        return attempt_children(owner, parsed.spec, first.status, attempt, settings)
    spec = parsed.spec
    known = jobs or {}
    predicted = {}
    for job_name in jobs_named(spec):
        where = "spec.model.fromFineTuneJob" if job_name == spec.model.from_fine_tune_job else "spec.adapters"
        if job_name not in known:
            raise ValueError(f"{where}: FineTuneJob {job_name} is not in these files; its outputs are only known "
                             "on the cluster (render it together with that job)")  # fmt: skip
        job_spec = known[job_name]
        if job_spec.output is None:
            raise ValueError(f"{where}: FineTuneJob {job_name} has no spec.output, so it keeps nothing to serve")
        job_owner = Owner("FineTuneJob", job_name, owner.namespace, PLACEHOLDER_UID)
        judged = desired_finetunejob(job_owner, job_spec, [], {}, Observed(), now, None, plan_settings, settings)
        if judged.status.phase == JobPhase.FAILED:
            raise ValueError(f"{where}: FineTuneJob {job_name} would be refused, so there is nothing to serve: "
                             + _message(judged.status, "Failed"))  # fmt: skip
        predicted[job_name] = predicted_job(job_name, job_spec)
    desired = desired_modelserve(owner, spec, [], {}, ServeObserved(jobs=predicted), now, None, settings)
    if not desired.children:
        raise ValueError("the operator would create nothing: " + _message(desired.status, "Ready"))
    return desired.children
