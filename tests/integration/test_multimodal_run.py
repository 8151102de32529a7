"""Issue 18: a vision-language fine-tune for real on CPU. `modelforge tiny-model --vision` builds a random
Qwen2.5-VL-architecture model (vision tower, image processor, vision tokens) and solid-colour images; the
real `swift sft` trains a LoRA on them through `modelforge run` (media pre-flight, freezeVit, maxPixels);
then `modelforge chat --image` and `modelforge infer` (a questions file with images) ask the trained adapter
about pictures through ms-swift's own infer. Weights are random, so answers are noise (often whitespace):
what is proven is the pipeline, images included (a prompt whose image tokens do not match the vision
features fails in transformers, as it did before the tokenizer got Qwen's token ids: testing_vl.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
MODELFORGE = [sys.executable, "-m", "modelforge.cli"]


def test_a_tiny_vision_model_trains_on_images_and_answers_about_them(tmp_path: Path) -> None:
    model, data = tmp_path / "vl", tmp_path / "data"
    built = subprocess.run([*MODELFORGE, "tiny-model", "--vision", str(model), "--dataset", str(data), "--rows", "8"],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert (
        any((model / f).exists() for f in ("processor_config.json", "preprocessor_config.json"))
        and len(list((data / "images").glob("*.png"))) == 8
    )
    spec = {
        "apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "colours"},
        "spec": {
            "model": {"source": str(model), "modelType": "qwen2_5_vl", "template": "qwen2_5_vl"},
            "datasets": [{"source": str(data / "train.jsonl"), "format": "messages"}],
            "multimodal": {"freezeVit": True, "freezeAligner": True, "maxPixels": 3136},
            "hyperparameters": {"maxSteps": 4, "batchSizePerDevice": 2, "maxLength": 256, "loggingSteps": 1},
            "checkpointing": {"saveSteps": 4},
        },
    }  # fmt: skip
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    run = subprocess.run([*MODELFORGE, "run", str(tmp_path / "job.yaml"), "--output", str(out)],
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    assert "8 media file(s) found and decoded" in run.stderr + run.stdout, run.stderr[-4000:]
    summary = json.loads((out / "modelforge-summary.json").read_text())
    adapter = Path(summary["outputs"]["adapter"])
    assert (adapter / "adapter_model.safetensors").exists(), summary
    records = [json.loads(line) for line in (out / "run" / "logging.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records if "loss" in record]
    assert len(losses) == 4 and all(loss > 0 for loss in losses), losses

    image = data / "images" / "000.png"
    ask = ["--adapter", str(adapter), "--image", str(image), "--max-new-tokens", "6", "What colour is the picture?"]
    chat = subprocess.run([*MODELFORGE, "chat", *ask], capture_output=True, text=True, timeout=600)
    assert chat.returncode == 0, chat.stderr[-4000:]
    questions, results = tmp_path / "questions.jsonl", tmp_path / "results.jsonl"
    rows = [{"messages": [{"role": "user", "content": "<image>What colour is it?"}], "images": [str(image)]},
            {"messages": [{"role": "user", "content": "<image><image>Same colour?"}],
             "images": [str(image), str(data / "images" / "001.png")]}]  # fmt: skip
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    files = ["--questions", str(questions), "--output", str(results), "--max-new-tokens", "6"]
    infer = subprocess.run([*MODELFORGE, "infer", "--adapter", str(adapter), *files], capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert infer.returncode == 0, infer.stderr[-4000:]
    answers = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(answers) == 2 and all(isinstance(a["response"], str) and a["response"] for a in answers), answers
