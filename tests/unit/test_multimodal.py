"""Multimodal fine-tunes: spec.multimodal -> swift flags, the media claim mounted, the planner's refusal."""

from __future__ import annotations

from pathlib import Path

from modelforge.api.validate import parse_resource
from modelforge.plan.models import guess
from modelforge.render.settings import RenderSettings
from modelforge.render.training import Owner, render_attempt
from modelforge.specfile import load_documents
from tests.launcher_specs import argv_for
from tests.unit.test_argv import flags

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "multimodal" / "finetunejob.yaml"


def _spec():
    return parse_resource(load_documents(EXAMPLE)[0].data).spec


def test_freeze_and_max_pixels_reach_swift():
    f = flags(argv_for(_spec()))
    assert (f["--freeze_vit"], f["--freeze_aligner"], f["--freeze_llm"]) == (["true"], ["true"], ["false"])
    assert f["--max_pixels"] == ["1003520"]
    text_only = _spec().model_copy(update={"multimodal": None})
    assert not {"--freeze_vit", "--max_pixels"} & set(flags(argv_for(text_only)))


def test_media_root_claim_is_mounted_read_only():
    owner = Owner("FineTuneJob", "r", "team-a", "8a1f0c2e-0000-4000-8000-000000000001")
    job = next(o for o in render_attempt(owner, _spec(), 1, RenderSettings()) if o["kind"] == "Job")
    mounts = job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "pvc-datasets", "mountPath": "/mnt/pvc/datasets", "readOnly": True} in mounts


def test_vision_language_models_are_not_planned_with_the_reason():
    for source in ("Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct", "pvc://m/Qwen2-VL-2B"):
        arch, note = guess(source)
        assert arch is None and "vision-language model" in note and "gpuMemory" in note
    assert guess("Qwen/Qwen2.5-7B-Instruct")[0] is not None
