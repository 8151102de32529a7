"""The training pod of the images tier: a FineTuneJob rendered by the real renderer, its pod run by PodRunner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelforge.render.manifests import render_resource
from modelforge.render.settings import RenderSettings
from modelforge.testing import build_tiny_model, write_chat_dataset

from .pod import PodRunner, image_name

SETTINGS = RenderSettings(trainer_image=image_name("trainer-cpu"), serve_swift_image=image_name("trainer-cpu"),
                          agent_image=image_name("operator"), vllm_image=image_name("vllm-cpu"))  # fmt: skip
STEPS = 20


def finetunejob(name: str, steps: int, save_steps: int, merge: bool) -> dict[str, Any]:
    return {
        "apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": "images"},
        "spec": {"model": {"source": "pvc://models/tiny", "modelType": "qwen3", "template": "qwen3"},
                 "method": "lora", "lora": {"rank": 8, "alpha": 16},
                 "datasets": [{"source": "pvc://models/data/chat.jsonl"}],
                 "hyperparameters": {"maxSteps": steps, "learningRate": 5e-3, "batchSizePerDevice": 2,
                                     "maxLength": 256, "loggingSteps": 1, "dtype": "float32"},
                 "checkpointing": {"saveSteps": save_steps, "keepLast": 4},
                 "output": {"claimName": "output", "merge": merge}},
    }  # fmt: skip


def training_pod(doc: dict[str, Any], claims: dict[str, Path], workdir: Path) -> PodRunner:
    """The attempt's Indexed Job pod (node rank 0), its ConfigMap and claims, as the kubelet would run it."""
    children = {c["kind"]: c for c in render_resource(doc, SETTINGS)}
    template = children["Job"]["spec"]["template"]
    config_map = children["ConfigMap"]
    metadata = {"name": f"{children['Job']['metadata']['name']}-0-abcde", "namespace": "images",
                "labels": template["metadata"]["labels"]}  # fmt: skip
    return PodRunner(template["spec"], workdir, claims=claims,
                     config_maps={config_map["metadata"]["name"]: config_map["data"]}, metadata=metadata,
                     extra_env={"JOB_COMPLETION_INDEX": "0"},  # what the Job controller adds to an Indexed Job's pod
                     hostname=f"{children['Job']['metadata']['name']}-0")  # fmt: skip


def volumes(root: Path) -> dict[str, Path]:
    """Claim `models` (the tiny model, hidden 128 so that vLLM's CPU attention takes it, and a dataset) and
    claim `output`, empty."""
    models = root / "claims" / "models"
    build_tiny_model(models / "tiny", hidden=128)
    write_chat_dataset(models / "data" / "chat.jsonl", 32)
    (root / "claims" / "output").mkdir(parents=True)
    return {"models": models, "output": root / "claims" / "output"}


def logged_steps(run_dir: Path) -> list[int]:
    path = run_dir / "logging.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [int(r["global_step/max_steps"].split("/")[0]) for r in rows if "loss" in r]
