"""Shared helpers: FineTuneJob specs from tests/specs/valid as typed objects, and argv for them."""

from __future__ import annotations

from pathlib import Path

from modelforge.api.finetunejob import FineTuneJobSpec
from modelforge.api.validate import parse_resource
from modelforge.launcher.argv import LaunchContext, build_sft_argv
from modelforge.plan.resolve import resolve
from modelforge.specfile import load_documents

VALID = Path(__file__).resolve().parent / "specs" / "valid"


def finetunejobs() -> dict[str, FineTuneJobSpec]:
    jobs = {}
    for path in sorted(VALID.glob("*.yaml")):
        for doc in load_documents(path):
            if doc.data["kind"] == "FineTuneJob":
                jobs[path.stem] = parse_resource(doc.data).spec
    return jobs


def argv_for(spec: FineTuneJobSpec, model: str = "/models/m", device: str = "cuda", resume: str | None = None):
    val = tuple(d.source for d in (spec.validation.datasets or [])) if spec.validation else ()
    ctx = LaunchContext(model, tuple(d.source for d in spec.datasets), val, "/mnt/output/run", device, resume)
    return build_sft_argv(spec, resolve(spec), ctx)
