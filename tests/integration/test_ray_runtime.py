"""The Ray Train runtime (`distributed.runtime: ray`) for real on the CPU: the launcher's attempt, as
`modelforge run --processes 2` runs it, starts a Ray instance of its own on loopback, and Ray Train's
TorchTrainer runs two workers (gloo), each the real ms-swift `sft` behind launcher/rank.py. Then the
RayJob's entrypoint as the head pod runs it (`modelforge launch` with the rendered ConfigMap and head env)
joins a Ray head started as KubeRay starts it, and its last line is what the operator reads.

Proven here: the two workers train ONE model (one process group of 2, identical weights at the end, one loss
curve), progress reaches /progress and /metrics while it trains, a second attempt resumes from the newest
complete checkpoint and finishes at the right step, and nothing of Ray is left running afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from modelforge.api.conditions import OUTCOME_PREFIX
from modelforge.api.finetunejob import FineTuneJobSpec
from modelforge.launcher.distributed import local_world
from modelforge.launcher.ray_train import LOCAL_RAY_ENV, LOG_ENV
from modelforge.launcher.run import RunOptions, run_attempt
from modelforge.plan.lifecycle import ray_cause, ray_outcome
from modelforge.render.settings import RenderSettings
from modelforge.render.training import Owner, render_attempt
from modelforge.testing import write_chat_dataset
from tests.cluster.kube import stop_process_group
from tests.cluster.operator import free_port

from .distributed_nodes import job_spec, volumes

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


# ------------------------------------------------------------------ the RayJob's head: `modelforge launch`


class RayHead:
    """`ray start --head` on loopback, as KubeRay starts the head pod's Ray (its own session, stopped by PID)."""

    def __init__(self, work: Path):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        env = {**os.environ, **LOCAL_RAY_ENV, **LOG_ENV}
        ray = Path(sys.executable).parent / "ray"
        self.log = work / "ray-head.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                 "--num-cpus", "3", "--num-gpus", "0", "--include-dashboard", "false",
                 "--temp-dir", tempfile.mkdtemp(prefix="mf-rh-"), "--disable-usage-stats"],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        """Every process this head started (Ray's daemons start sessions of their own), then the head."""
        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        stop_process_group(self.proc, grace=5)  # `ray start --block` sits out a 30 s SIGTERM (measured)
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[RayHead]:
    head = RayHead(tmp_path)
    yield head
    head.stop()


def head_launch(spec: FineTuneJobSpec, claims: Path, head: RayHead, work: Path) -> tuple[int, str]:
    """The RayJob's entrypoint as the head pod runs it: the rendered ConfigMap and head env, `modelforge launch`.
    Only what one machine forces differs: the claims are directories, the workers use the CPU, and Ray's
    address is given (KubeRay's job submission sets it)."""
    owner = Owner("FineTuneJob", "sft", "team-a", "uid-sft")
    config_map, rayjob = render_attempt(owner, spec, 1, RenderSettings())
    head_spec = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert rayjob["spec"]["entrypoint"] == "modelforge launch"
    rendered = {e["name"]: e["value"] for e in head_spec["containers"][0]["env"] if "value" in e}
    config = work / "job.json"
    config.write_text(config_map["data"]["job.json"])
    output = claims / "models" / "sft"
    env = {**os.environ, **rendered, "MODELFORGE_PVC_ROOT": str(claims), "MODELFORGE_OUTPUT_ROOT": str(output),
           "MODELFORGE_PROGRESS_PORT": str(free_port()), "MODELFORGE_PROGRESS_HOST": "127.0.0.1",
           "MODELFORGE_RAY_WORKER_DEVICE": "cpu", "MODELFORGE_RAY_ADDRESS": head.address,
           **LOCAL_RAY_ENV}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "modelforge.cli", "launch", "--config", str(config),
                           "--termination-log", str(work / "termination")], env=env, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_the_rayjob_entrypoint_joins_the_head_and_reports_its_outcome(ray_head: RayHead, tmp_path: Path) -> None:
    claims = volumes(tmp_path)
    spec = job_spec(resources={"nodes": 1, "gpusPerNode": 2}, hyperparameters={"maxSteps": 8},
                    distributed={"runtime": "ray"})  # fmt: skip
    code, text = head_launch(spec, claims, ray_head, tmp_path)
    assert code == 0, text[-4000:]
    assert "Ray Train with 2 worker(s) (gloo)" in text and "2 processes joined one process group" in text
    # What KubeRay would copy into the RayJob's status.message ends with the line the operator reads.
    last = [line for line in text.splitlines() if line.startswith(OUTCOME_PREFIX)][-1]
    assert ray_outcome(last)["reason"] == "Completed"
    assert ray_outcome(last)["outputs"]["adapter"] == "pvc://models/sft/run/checkpoint-8"

    # A broken dataset: the driver's pre-flight fails before any worker, and the operator reads DataError.
    (claims / "data" / "chat.jsonl").write_text('{"messages": [}\n')
    code, text = head_launch(spec, claims, ray_head, tmp_path)
    assert code == 1, text[-3000:]
    message = "Job entrypoint command failed with exit code 1, last available logs:\n" + text[-20000:]
    cause = ray_cause({"status": {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "message": message}})
    assert cause is not None and cause.reason == "DataError" and not cause.retryable
    assert "chat.jsonl:1" in cause.message
