"""`modelforge run` with the REAL ms-swift on CPU: LoRA, full, all formats, resume after a kill, merge +
infer, and a corrupt dataset stopped by pre-flight before ms-swift starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from modelforge.launcher.outcome import EXIT_PERMANENT, EXIT_RETRYABLE
from modelforge.testing import write_chat_dataset

pytestmark = pytest.mark.integration
MODELFORGE = [sys.executable, "-m", "modelforge.cli"]


def write_spec(tmp_path: Path, model: Path, *, name: str = "job", datasets=None, **spec) -> Path:
    data = datasets or [{"source": str(write_chat_dataset(tmp_path / "chat.jsonl", 32))}]
    body = {
        "model": {"source": str(model), "modelType": "qwen3", "template": "qwen3"},
        "datasets": data,
        "hyperparameters": {"maxSteps": 4, "batchSizePerDevice": 2, "maxLength": 256, "loggingSteps": 1},
        "checkpointing": {"saveSteps": 2},
    }
    body.update(spec)
    doc = {"apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name}, "spec": body}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(spec: Path, output: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODELFORGE, "run", str(spec), "--output", str(output), *extra],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def summary(output: Path) -> dict:
    return json.loads((output / "modelforge-summary.json").read_text())


def logged_steps(output: Path) -> list[int]:
    lines = (output / "run" / "logging.jsonl").read_text().splitlines()
    steps = [json.loads(line).get("global_step/max_steps") for line in lines]
    return [int(s.split("/")[0]) for s, line in zip(steps, lines, strict=True) if s and '"loss"' in line]


def test_lora_run_then_merge_and_infer(tmp_path, tiny_model):
    spec = write_spec(tmp_path, tiny_model, output={"claimName": "unused-locally", "merge": True})
    out = tmp_path / "out"
    result = run(spec, out)
    assert result.returncode == 0, result.stderr
    result_summary = summary(out)
    assert result_summary["outcome"] == "Succeeded" and result_summary["last_step"] == 4
    adapter = Path(result_summary["outputs"]["adapter"])
    merged = Path(result_summary["outputs"]["mergedModel"])
    assert (adapter / "adapter_model.safetensors").exists()
    assert (merged / "model.safetensors").exists() and (merged / "config.json").exists()
    assert logged_steps(out) == [1, 2, 3, 4]
    assert "rows, format messages, 32 usable" in result.stderr

    questions = tmp_path / "questions.txt"
    questions.write_text("How do I reset my password?\nHow do I track my order?\n")
    answers = tmp_path / "results.jsonl"
    infer = subprocess.run(
        [*MODELFORGE, "infer", "--model", str(merged), "--questions", str(questions), "--output", str(answers),
         "--max-new-tokens", "8"], capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert infer.returncode == 0, infer.stderr
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["messages"][-1]["content"] for r in rows] == ["How do I reset my password?", "How do I track my order?"]
    assert all(isinstance(r["response"], str) for r in rows)


def test_full_fine_tune(tmp_path, tiny_model):
    spec = write_spec(tmp_path, tiny_model, method="full")
    out = tmp_path / "out"
    result = run(spec, out)
    assert result.returncode == 0, result.stderr
    model_dir = Path(summary(out)["outputs"]["model"])
    assert (model_dir / "model.safetensors").exists() and not (model_dir / "adapter_model.safetensors").exists()


def test_all_four_dataset_formats_train_together(tmp_path, tiny_model):
    rows = {
        "alpaca.jsonl": {"instruction": "Translate to French", "input": "hello", "output": "bonjour"},
        "qr.jsonl": {"query": "What is 2+2?", "response": "4"},
        "text.jsonl": {"text": "ModelForge fine-tunes models on Kubernetes."},
        "messages.jsonl": {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]},
    }
    datasets = []
    for name, row in rows.items():
        (tmp_path / name).write_text((json.dumps(row) + "\n") * 8)
        datasets.append({"source": str(tmp_path / name)})
    out = tmp_path / "out"
    result = run(write_spec(tmp_path, tiny_model, datasets=datasets), out)
    assert result.returncode == 0, result.stderr
    for fmt in ("alpaca", "query-response", "text", "messages"):
        assert f"format {fmt}, 8 usable" in result.stderr
    args = json.loads((out / "run" / "args.json").read_text())
    assert len(args["dataset"]) == 4


def test_kill_after_first_checkpoint_then_resume(tmp_path, tiny_model):
    spec = write_spec(
        tmp_path, tiny_model,
        hyperparameters={"maxSteps": 80, "batchSizePerDevice": 2, "maxLength": 256, "loggingSteps": 1},
        checkpointing={"saveSteps": 5, "keepLast": 50},
    )  # fmt: skip
    out = tmp_path / "out"
    process = subprocess.Popen([*MODELFORGE, "run", str(spec), "--output", str(out)], stderr=subprocess.PIPE, text=True)
    first = out / "run" / "checkpoint-5" / "trainer_state.json"
    deadline = time.monotonic() + 240
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.exists(), "no checkpoint appeared"
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_RETRYABLE, stderr
    killed = summary(out)
    assert killed["reason"] == "Interrupted" and killed["retryable"] is True
    stopped_at = max(logged_steps(out))
    assert 5 <= stopped_at < 80

    result = run(spec, out)
    assert result.returncode == 0, result.stderr
    resumed_line = next(line for line in result.stderr.splitlines() if line.startswith("resuming from checkpoint-"))
    resumed_from = int(resumed_line.rsplit("-", 1)[1])
    assert 5 <= resumed_from <= stopped_at
    steps = logged_steps(out)
    second_run = steps[steps.index(stopped_at) + 1 :]
    assert second_run[0] == resumed_from + 1, "the resumed run must continue after its checkpoint"
    assert second_run[-1] == 80 and summary(out)["last_step"] == 80


def test_corrupt_dataset_fails_in_preflight_before_swift(tmp_path, tiny_model):
    data = tmp_path / "broken.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    data.write_text(json.dumps(good) + "\n" + '{"messages": [\n' + json.dumps(good) + "\n")
    out = tmp_path / "out"
    started = time.monotonic()
    result = run(write_spec(tmp_path, tiny_model, datasets=[{"source": str(data)}]), out)
    assert result.returncode == EXIT_PERMANENT
    assert f"{data}:2: invalid JSON" in result.stderr
    assert summary(out)["reason"] == "DataError"
    assert not (out / "run").exists(), "ms-swift must not have started"
    assert time.monotonic() - started < 30


def test_dry_run_prints_the_command_and_trains_nothing(tmp_path, tiny_model):
    out = tmp_path / "out"
    result = run(write_spec(tmp_path, tiny_model), out, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run: would run" in result.stderr and "modelforge.launcher.rank --expect-world-size 1" in result.stderr
    assert not (out / "run").exists()


def test_the_launcher_as_pid_1_trains_as_in_a_pod(tmp_path, tiny_model):
    """In a pod the launcher is PID 1 (the container's entrypoint), so a one-process rank's parent is 1:
    that is the launcher, not an orphaning (found by review: every one-process pod exited 1 silently)."""
    spec = write_spec(tmp_path, tiny_model)
    out = tmp_path / "out"
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc",
                             *MODELFORGE, "run", str(spec), "--output", str(out)],
                            capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert summary(out)["outcome"] == "Succeeded" and logged_steps(out) == [1, 2, 3, 4]
