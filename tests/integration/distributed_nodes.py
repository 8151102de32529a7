"""Two training "nodes" on this machine: the launcher (`modelforge launch`) started once per node with the
ConfigMap and the environment the renderer gives pods 0 and 1 of a 2 x 1 FineTuneJob, running the real
`swift sft` under torchrun with gloo on the CPU. Used by tests/integration/test_distributed.py.

Only what one machine forces differs from the pods: MASTER_ADDR (rank 0's pod, `<attempt>-0.<svc>...`) is
127.0.0.1, the rendezvous and progress ports are free ports, and the claims are directories
(MODELFORGE_PVC_ROOT, MODELFORGE_OUTPUT_ROOT). JOB_COMPLETION_INDEX is set as the Indexed Job sets it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from modelforge.api.finetunejob import FineTuneJobSpec
from modelforge.render.settings import RenderSettings
from modelforge.render.training import Owner, render_attempt
from modelforge.testing import build_tiny_model, write_chat_dataset
from tests.cluster.kube import stop_process_group
from tests.cluster.operator import free_port

STEPS, SAVE_STEPS = 24, 6


def job_spec(**overrides: Any) -> FineTuneJobSpec:
    spec: dict[str, Any] = {
        "model": {"source": "pvc://models/tiny", "modelType": "qwen3", "template": "qwen3"},
        "method": "lora", "lora": {"rank": 4, "alpha": 8},
        "datasets": [{"source": "pvc://data/chat.jsonl"}],
        "hyperparameters": {"maxSteps": STEPS, "batchSizePerDevice": 2, "maxLength": 128, "loggingSteps": 1,
                            "learningRate": 1e-3},
        "checkpointing": {"saveSteps": SAVE_STEPS, "keepLast": 10},
        "resources": {"nodes": 2, "gpusPerNode": 1},
        "distributed": {"deepspeed": "none", "rendezvousTimeoutSeconds": 60, "collectiveTimeoutSeconds": 60},
        "output": {"claimName": "models", "subPath": "sft"},
    }  # fmt: skip
    for key, value in overrides.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return FineTuneJobSpec.model_validate(spec)


def volumes(root: Path) -> Path:
    """The claims: models/tiny (the tiny Qwen3), data/chat.jsonl; the job writes models/sft."""
    claims = root / "volumes"
    if not (claims / "models" / "tiny" / "config.json").exists():
        build_tiny_model(claims / "models" / "tiny")
        write_chat_dataset(claims / "data" / "chat.jsonl", 64)
    return claims


@dataclass
class Node:
    index: int
    proc: subprocess.Popen[bytes]
    log: Path
    termination: Path
    progress_port: int

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def outcome(self) -> dict[str, Any]:
        return json.loads(self.termination.read_text()) if self.termination.exists() else {}

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def workers(self) -> list[psutil.Process]:
        """This node's training processes: torchrun's own children (not their data-loader workers)."""
        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        torchrun = [p for p in tree if "torch.distributed.run" in " ".join(_cmdline(p))]
        workers = []
        for agent in torchrun:
            with contextlib.suppress(psutil.NoSuchProcess):
                workers += agent.children()
        return workers

    def stop(self) -> None:
        for worker in self.workers():  # a SIGSTOPped rank must be continued to act on anything
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.send_signal(signal.SIGCONT)
        stop_process_group(self.proc)


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def start_nodes(spec: FineTuneJobSpec, claims: Path, work: Path, attempt: int = 1,
                indexes: tuple[int, ...] = (0, 1), env_override: dict[int, dict[str, str]] | None = None,
                ) -> list[Node]:  # fmt: skip
    """Start one launcher per index with the rendered pod's env and ConfigMap (attempt N of job `sft`)."""
    owner = Owner("FineTuneJob", "sft", "team-a", "uid-sft")
    config_map, _service, job = render_attempt(owner, spec, attempt, RenderSettings())
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["modelforge", "launch"], container["command"]
    rendered = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert rendered["MASTER_ADDR"].startswith(f"sft-a{attempt}-0.sft-a{attempt}.")  # rank 0's pod, headless Service
    work.mkdir(parents=True, exist_ok=True)
    config = work / "job.json"
    config.write_text(config_map["data"]["job.json"])
    port = free_port()
    nodes = []
    for index in indexes:
        output = claims / "models" / "sft"
        output.mkdir(parents=True, exist_ok=True)
        progress = free_port()
        env = {**os.environ, **rendered, "JOB_COMPLETION_INDEX": str(index), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "MODELFORGE_PVC_ROOT": str(claims), "MODELFORGE_OUTPUT_ROOT": str(output),
               "MODELFORGE_PROGRESS_PORT": str(progress), "MODELFORGE_PROGRESS_HOST": "127.0.0.1",
               "OMP_NUM_THREADS": "1"}  # fmt: skip
        env.update((env_override or {}).get(index, {}))
        log, termination = work / f"node-{index}.log", work / f"termination-{index}"
        termination.unlink(missing_ok=True)
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "modelforge.cli", "launch", "--config", str(config),
                                     "--termination-log", str(termination)], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # fmt: skip
        nodes.append(Node(index, proc, log, termination, progress))
    return nodes


def logged_steps(output: Path) -> list[dict[str, Any]]:
    """The training log (rank 0 writes logging.jsonl): one entry per logged step."""
    path = output / "run" / "logging.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "loss" in r and "/" in str(r.get("global_step/max_steps", ""))]


def step_of(row: dict[str, Any]) -> int:
    return int(str(row["global_step/max_steps"]).split("/")[0])


def wait_for_step(output: Path, step: int, nodes: list[Node], timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = logged_steps(output)
        if rows and step_of(rows[-1]) >= step:
            return time.monotonic()
        for node in nodes:
            if node.proc.poll() is not None:
                raise AssertionError(f"node {node.index} exited ({node.proc.returncode}) before step {step}:\n"
                                     f"{node.text()[-4000:]}")  # fmt: skip
        time.sleep(0.2)
    raise AssertionError(f"step {step} not reached in {timeout} s:\n{nodes[0].text()[-3000:]}")
