"""The Ray Train runtime (`distributed.runtime: ray`) for real on the CPU: the launcher's attempt, as
`modelforge run --processes 2` runs it, starts a Ray instance of its own on loopback, and Ray Train's
TorchTrainer runs two workers (gloo), each the real ms-swift `sft` behind launcher/rank.py.

Proven here: the two workers train ONE model (one process group of 2, identical weights at the end, one loss
curve), progress reaches /progress and /metrics while it trains, a second attempt resumes from the newest
complete checkpoint and finishes at the right step, and nothing of Ray is left running afterwards.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from modelforge.api.finetunejob import FineTuneJobSpec
from modelforge.launcher.distributed import local_world
from modelforge.launcher.run import RunOptions, run_attempt
from modelforge.testing import write_chat_dataset
from tests.cluster.operator import free_port

pytestmark = pytest.mark.integration
STEPS, SAVE_STEPS = 16, 8


def ray_spec(model: Path, data: Path, steps: int) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({
        "model": {"source": str(model), "modelType": "qwen3", "template": "qwen3"},
        "method": "lora", "lora": {"rank": 4, "alpha": 8},
        "datasets": [{"source": str(data)}],
        "hyperparameters": {"maxSteps": steps, "batchSizePerDevice": 2, "maxLength": 128, "loggingSteps": 1,
                            "learningRate": 1e-3},
        "checkpointing": {"saveSteps": SAVE_STEPS, "keepLast": 10},
        "resources": {"nodes": 1, "gpusPerNode": 2},
        "distributed": {"runtime": "ray", "deepspeed": "none", "collectiveTimeoutSeconds": 120},
    })  # fmt: skip


class Watcher(threading.Thread):
    """Reads the launcher's /progress and /metrics while the attempt runs."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.steps, self.metrics, self.done = port, set(), "", threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                base = f"http://127.0.0.1:{self.port}"
                with urllib.request.urlopen(f"{base}/progress", timeout=2) as response:
                    step = json.loads(response.read()).get("step")
                with urllib.request.urlopen(f"{base}/metrics", timeout=2) as response:
                    metrics = response.read().decode()
            except OSError:
                continue
            if step:
                self.steps.add(step)
                self.metrics = metrics


def attempt(spec: FineTuneJobSpec, output: Path, log: Path) -> tuple[Any, Watcher]:
    world, _ = local_world(2, 0, processes=2)
    port = free_port()
    watcher = Watcher(port)
    watcher.start()
    with log.open("a") as sink:
        options = RunOptions(name="ray", output_root=output, world=world, local=True, device="cpu",
                             progress_port=port, progress_host="127.0.0.1", sink=sink)  # fmt: skip
        try:
            outcome = run_attempt(spec, options)
        finally:
            watcher.done.set()
    return outcome, watcher


def ray_processes(grace: float = 15.0) -> list[str]:
    """Ray's processes still running `grace` seconds after the attempt ended (they stop asynchronously)."""
    names = ("raylet", "gcs_server", "ray::", "default_worker.py", "dashboard/agent.py", "runtime_env/agent")
    deadline = time.monotonic() + grace
    while True:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            line = " ".join(proc.info["cmdline"] or [])
            if any(n in line for n in names):
                found.append(f"{proc.pid}: {line[:160]}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def logged_steps(output: Path) -> list[int]:
    steps = []
    for line in (output / "run" / "logging.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record and "global_step/max_steps" in record:
            steps.append(int(record["global_step/max_steps"].split("/")[0]))
    return steps


def test_two_ray_workers_train_one_model_and_resume(tiny_model: Path, tmp_path: Path) -> None:
    data = write_chat_dataset(tmp_path / "chat.jsonl", 64)
    output, log = tmp_path / "out", tmp_path / "train.log"

    outcome, watcher = attempt(ray_spec(tiny_model, data, STEPS), output, log)
    text = log.read_text(errors="replace")
    assert outcome.reason == "Completed", text[-3000:]
    assert "Ray Train with 2 worker(s) (gloo)" in text
    assert "2 processes joined one process group (gloo" in text
    assert "the 2 ranks hold identical weights after training" in text
    assert logged_steps(output) == list(range(1, STEPS + 1)), "one loss curve, every step once"
    assert outcome.last_step == STEPS and outcome.outputs["adapter"].endswith(f"checkpoint-{STEPS}")
    assert watcher.steps and max(watcher.steps) <= STEPS, "progress was served while training"
    assert "modelforge_train_step" in watcher.metrics
    left = ray_processes()
    assert not left, f"the local Ray instance was stopped: {left}"

    # A second attempt with more steps resumes from the newest checkpoint (as the operator's restart would).
    outcome, _ = attempt(ray_spec(tiny_model, data, STEPS + SAVE_STEPS), output, log)
    text = log.read_text(errors="replace")
    assert outcome.reason == "Completed", text[-3000:]
    assert outcome.last_step == STEPS + SAVE_STEPS, outcome
    assert logged_steps(output) == list(range(1, STEPS + SAVE_STEPS + 1)), "resumed at step 17, not from 1"
    left = ray_processes()
    assert not left, f"the local Ray instance was stopped: {left}"
