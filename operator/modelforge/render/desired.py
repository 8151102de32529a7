"""One function per kind: (spec, current status, observed children, settings) -> desired children + new status.

The operator calls these on every reconcile and applies what they return; `modelforge render` calls the
same functions with nothing observed yet, so what it prints is what the operator creates (a cluster test
holds them equal for every example and spec file). Pure: no API calls, no environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..api.finetunejob import FineTuneJobSpec, FineTuneJobStatus, JobPhase, Outputs, Runtime
from ..api.modelserve import ModelServeSpec, ModelServeStatus
from ..api.validate import serve_name_problems
from ..plan.capacity import PlanSettings
from ..plan.lifecycle import Decision, Observed, decide, with_planned_deepspeed
from ..plan.outputs import output_paths
from ..plan.phases import not_promoted
from ..plan.serving import ServeObserved, decide_serve
from .names import label_value
from .security import image_problems
from .serving import SPEC_HASH, pods_to_nudge, render_serve
from .settings import RenderSettings
from .training import Owner, output_uri, render_attempt


@dataclass
class DesiredJob:
    """What one FineTuneJob reconcile does: the decision (status, attempt to delete, events) and the
    children to create (attempt N's ConfigMap, Service and Job; the ModelServe of spec.serve)."""

    decision: Decision
    children: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> FineTuneJobStatus:
        return self.decision.status


def attempt_children(
    owner: Owner, spec: FineTuneJobSpec, status: FineTuneJobStatus, attempt: int, settings: RenderSettings
) -> list[dict[str, Any]]:
    """Attempt N's objects, with `deepspeed: auto` replaced by what the plan in `status` chose."""
    plan = status.plan.to_wire() if status.plan else None
    return render_attempt(owner, with_planned_deepspeed(spec, plan), attempt, settings)


def desired_finetunejob(
    owner: Owner,
    spec: FineTuneJobSpec | None,
    problems: list[str],
    current: FineTuneJobStatus | Mapping[str, Any],
    observed: Observed,
    now: datetime,
    generation: int | None,
    plan_settings: PlanSettings,
    settings: RenderSettings,
) -> DesiredJob:
    problems = [*problems, *image_problems(spec.resources.image if spec else None, settings)]
    if spec is not None and spec.serve is not None:  # said before training, not after its GPU hours
        problems += image_problems(spec.serve.spec.resources.image, settings, "spec.serve.spec.resources.image")
        started = (current.get("attempt") if isinstance(current, Mapping) else current.attempt) or 0
        if not started:  # a job that already trains under such a name keeps training (its serve is then refused)
            job = {"kind": "FineTuneJob", "metadata": {"name": owner.name}, "spec": {"serve": spec.serve.to_wire()}}
            problems += [str(p) for p in serve_name_problems(job)]
    decision = decide(spec, problems, current, observed, now, generation, plan_settings)
    desired = DesiredJob(decision)
    if decision.create_attempt and spec is not None:
        desired.children += attempt_children(owner, spec, decision.status, decision.create_attempt, settings)
    status = decision.status
    ray = spec is not None and spec.distributed.runtime == Runtime.RAY
    if ray and spec is not None and status.phase == JobPhase.SUCCEEDED and not status.outputs:
        # A RayJob that succeeded says only "Job finished successfully": the outputs are where the spec put them.
        outputs = spec_outputs(owner, spec)
        if outputs:
            decision.status = status = status.model_copy(update={"outputs": Outputs.model_validate(outputs)})
    promoted = not_promoted(status.conditions or ()) is None  # an evaluation gate that failed keeps it unserved
    if (spec is not None and spec.serve is not None and status.phase == JobPhase.SUCCEEDED and promoted
            and not status.serve_name):  # fmt: skip
        serve = modelserve_from_job(owner.name, owner.namespace, spec.serve.to_wire(), spec.model.trust_remote_code)
        desired.children.append(serve)
        decision.status = status.model_copy(update={"serve_name": serve["metadata"]["name"]})
        decision.events.append(("Normal", "ServeCreated", f"created ModelServe {serve['metadata']['name']}"))
    return desired


def spec_outputs(owner: Owner, spec: FineTuneJobSpec) -> dict[str, str]:
    """Where a finished attempt's results are, from the spec alone: ms-swift keeps `last-checkpoint` (a link
    to the newest checkpoint) in the run directory, and the merge writes `merged` beside it."""
    uri = output_uri(owner, spec)
    return output_paths(uri, spec) if uri is not None else {}


def modelserve_from_job(
    job_name: str, namespace: str, template: dict[str, Any], trust_remote_code: bool = False
) -> dict[str, Any]:
    """The ModelServe a FineTuneJob's spec.serve asks for. No owner reference: deleting the job keeps it.
    It serves the job's output, trusting the model's code when the job did (unless spec.serve says)."""
    spec = dict(template.get("spec") or {})
    spec.setdefault("model", {"fromFineTuneJob": job_name, **({"trustRemoteCode": True} if trust_remote_code else {})})
    return {
        "apiVersion": "modelforge.io/v1alpha1",
        "kind": "ModelServe",
        "metadata": {"name": template.get("name") or job_name, "namespace": namespace,
                     "labels": {"modelforge.io/from-job": label_value(job_name)}},
        "spec": spec,
    }  # fmt: skip


@dataclass
class DesiredServe:
    """What one ModelServe reconcile does: the new status, events, and the Deployment and Service to apply
    (None while the model is not available or the spec is refused)."""

    status: ModelServeStatus
    events: list[tuple[str, str, str]]
    deployment: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    adapters: dict[str, Any] | None = None  # the ConfigMap of live adapters, applied before the Deployment
    # Serving pods to annotate with the adapters' digest once the ConfigMap is applied (name -> digest): the
    # patch makes their kubelet refresh the mounted copy now (render/serving.py ADAPTERS_DIGEST).
    nudge: dict[str, str] = field(default_factory=dict)

    @property
    def children(self) -> list[dict[str, Any]]:
        return [c for c in (self.adapters, self.deployment, self.service) if c is not None]


def desired_modelserve(
    owner: Owner,
    spec: ModelServeSpec | None,
    problems: list[str],
    current: ModelServeStatus | Mapping[str, Any],
    observed: ServeObserved,
    now: datetime,
    generation: int | None,
    settings: RenderSettings,
) -> DesiredServe:
    problems = [*problems, *image_problems(spec.resources.image if spec else None, settings)]
    decision = decide_serve(owner.name, owner.namespace, spec, problems, current, observed, now, generation)
    desired = DesiredServe(decision.status, decision.events)
    if decision.model is None or spec is None:
        return desired
    objects = render_serve(owner, spec, decision.model, settings)
    desired.deployment, desired.service, desired.adapters = objects.deployment, objects.service, objects.adapters
    desired.nudge = pods_to_nudge(objects.adapters, observed.pods)
    rolled = (observed.deployment or {}).get("metadata", {}).get("annotations", {}).get(SPEC_HASH)
    if observed.deployment is not None and rolled != objects.spec_hash:
        desired.events.append(("Normal", "Rolling", "the spec changed: rolling the Deployment"))
    return desired
