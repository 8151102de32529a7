"""Pure checks and resolution for a ModelServe, before anything is created."""

from __future__ import annotations

from typing import Any

from ..api.finetunejob import FineTuneJobSpec, Method
from ..api.modelserve import ModelServeSpec
from ..render.serving import ResolvedModel, engine_for, gpus_per_replica
from .models import Architecture


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def serve_problems(spec: ModelServeSpec, arch: Architecture | None, model_name: str) -> tuple[list[str], list[str]]:
    """(problems that stop the serve, notes worth showing) for a spec and the model it will load."""
    problems = list(engine_for(spec).problems(spec))
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
