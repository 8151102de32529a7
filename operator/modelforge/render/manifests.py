"""Render any ModelForge document into the children the operator creates for it."""

from __future__ import annotations

from typing import Any

from ..api.finetunejob import FineTuneJobSpec
from ..api.validate import parse_resource
from ..plan.models import architecture
from ..plan.resolve import resolve
from ..plan.serving import predicted_outputs, resolve_from_job, serve_problems
from ..render.serving import ResolvedModel, render_serve
from .settings import RenderSettings
from .training import Owner, render_attempt

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def render_resource(
    doc: dict[str, Any],
    settings: RenderSettings,
    *,
    attempt: int = 1,
    namespace: str = "default",
    jobs: dict[str, FineTuneJobSpec] | None = None,
) -> list[dict[str, Any]]:
    """Children of a validated document. A ModelServe that serves a FineTuneJob is rendered with the
    job's predicted outputs when that job is among `jobs`. Raises ValueError naming the field otherwise."""
    parsed = parse_resource(doc)
    uid = doc["metadata"].get("uid") or PLACEHOLDER_UID
    owner = Owner(parsed.resource.kind, parsed.name, parsed.namespace or namespace, uid)
    if parsed.resource.kind == "FineTuneJob":
        resolve(parsed.spec)  # batch arithmetic errors surface here, before anything is created
        return render_attempt(owner, parsed.spec, attempt, settings,
                              active_deadline_seconds=parsed.spec.active_deadline_seconds)  # fmt: skip
    spec = parsed.spec
    if spec.model.from_fine_tune_job:
        job_name = spec.model.from_fine_tune_job
        job_spec = (jobs or {}).get(job_name)
        if job_spec is None:
            raise ValueError(f"spec.model.fromFineTuneJob: FineTuneJob {job_name} is not in these files; "
                             "its outputs are only known on the cluster")  # fmt: skip
        if job_spec.output is None:
            raise ValueError(f"spec.model.fromFineTuneJob: FineTuneJob {job_name} has no spec.output, so it keeps "
                             "nothing to serve")  # fmt: skip
        predicted = {
            "spec": job_spec.to_wire(),
            "status": {"phase": "Succeeded", "outputs": predicted_outputs(job_name, job_spec)},
        }
        model, why = resolve_from_job(job_name, predicted)
        if model is None:
            raise ValueError(f"spec.model.fromFineTuneJob: {why}")
        arch_id = job_spec.model.source
    else:
        model, arch_id = ResolvedModel(str(spec.model.source)), str(spec.model.source)
    adapters = []
    for adapter in spec.adapters or []:
        if adapter.source:
            adapters.append((adapter.name, adapter.source))
            continue
        job_spec = (jobs or {}).get(str(adapter.from_fine_tune_job))
        if job_spec is None or "adapter" not in predicted_outputs(str(adapter.from_fine_tune_job), job_spec):
            raise ValueError(f"spec.adapters: FineTuneJob {adapter.from_fine_tune_job} (adapter {adapter.name}) is not "
                             "in these files with a LoRA output; render it together with that job")  # fmt: skip
        adapters.append((adapter.name, predicted_outputs(str(adapter.from_fine_tune_job), job_spec)["adapter"]))
    arch = architecture(arch_id)
    problems, _ = serve_problems(spec, arch, arch_id)
    if problems:
        raise ValueError("; ".join(problems))
    model = ResolvedModel(model.base, (*model.adapters, *adapters), arch.params_b if arch else None)
    objects = render_serve(owner, spec, model, settings)
    return [objects.deployment, objects.service]
