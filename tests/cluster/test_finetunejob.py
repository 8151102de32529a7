"""FineTuneJob on the real control plane: the real Job controller makes the pods, the real scheduler
places them on kwok's GPU nodes, the test plays the kubelet's exits, and the real launcher progress
server answers at rank 0's pod IP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelforge.launcher.progress import ProgressServer, ProgressTracker

from .kube import Kube, kubectl
from .operator import OperatorProcess


def finetunejob(ns: str, name: str = "sft", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"source": "Qwen/Qwen3-8B"},
        "datasets": [{"source": "pvc://data/chat.jsonl"}],
        "hyperparameters": {"maxSteps": 100},
        "output": {"claimName": "models"},
        "failurePolicy": {"maxRestarts": 2, "backoffSeconds": 0},
    }
    body.update(spec)
    return {"apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name, "namespace": ns}, "spec": body}  # fmt: skip


@pytest.fixture
def claims(kube: Kube, ns: str) -> str:
    kube.claim(ns, "data")
    kube.claim(ns, "models")
    return ns


def status(kube: Kube, ns: str, name: str = "sft") -> dict[str, Any]:
    return (kube.get("FineTuneJob", ns, name) or {}).get("status") or {}


def condition(kube: Kube, ns: str, kind: str, name: str = "sft") -> dict[str, Any]:
    return next((c for c in status(kube, ns, name).get("conditions", []) if c["type"] == kind), {})


def pods_of(kube: Kube, ns: str, name: str, attempt: int) -> list[dict[str, Any]]:
    return kube.list("Pod", ns, {"modelforge.io/job": name, "modelforge.io/attempt": str(attempt)})


def running_pods(kube: Kube, ns: str, name: str, attempt: int, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        pods = [p for p in pods_of(kube, ns, name, attempt) if p.get("status", {}).get("phase") == "Running"]
        return pods if len(pods) == count else None

    pods = kube.wait_for(ready, 60, f"{count} running pod(s) of {name} attempt {attempt}")
    return sorted(pods, key=lambda p: p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"])


@pytest.fixture
def progress_log(tmp_path: Path) -> Path:
    log = tmp_path / "logging.jsonl"
    log.write_text(json.dumps({"loss": 1.25, "learning_rate": 1e-4, "epoch": 0.3,
                               "global_step/max_steps": "30/100", "train_speed(s/it)": 0.5}) + "\n")  # fmt: skip
    return log


def test_children_pods_and_progress(kube: Kube, operator: OperatorProcess, claims: str, progress_log: Path,
                                    kubeconfig: Path) -> None:  # fmt: skip
    ns = claims
    kube.create(finetunejob(ns, resources={"nodes": 2, "gpusPerNode": 8}))
    job = kube.wait_for(lambda: kube.get("Job", ns, "sft-a1"), 30, "the Job of attempt 1")
    assert (job["spec"]["completions"], job["spec"]["parallelism"], job["spec"]["completionMode"]) == (2, 2, "Indexed")
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("FineTuneJob", "sft", kube.get("FineTuneJob", ns, "sft")
                                                            ["metadata"]["uid"])  # fmt: skip
    assert kube.get("Service", ns, "sft-a1")["spec"]["clusterIP"] == "None"
    pods = running_pods(kube, ns, "sft", 1, 2)
    # The real scheduler put each 8-GPU pod on its own 8-GPU node (the small node has 2).
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["gpu-node-0", "gpu-node-1"]
    rank0_ip = pods[0]["status"]["podIP"]
    # The real progress server of the launcher, bound to rank 0's pod IP, as in the pod.
    server = ProgressServer(ProgressTracker(progress_log, tokens_per_step=2000), port=8090, host=rank0_ip).start()
    try:
        kube.wait_for(lambda: status(kube, ns).get("progress", {}).get("step") == 30, 30, "progress in status")
        st = status(kube, ns)
        assert st["phase"] == "Running" and st["progress"]["loss"] == 1.25
        assert condition(kube, ns, "Running")["reason"] == "Training"
        table = kubectl(kubeconfig, "get", "ftj", "sft", "-n", ns).stdout
        assert "Running" in table and "30/100 (30%)" in table and "1.25" in table, table
    finally:
        server.stop()
    # Both ranks exit 0 with the launcher's termination message: Succeeded with the outputs.
    outcome = {"outcome": "Succeeded", "reason": "Completed", "message": "trained 100 step(s)", "last_step": 100,
               "total_steps": 100, "outputs": {"adapter": "pvc://models/sft/run/checkpoint-100"}}  # fmt: skip
    for pod in pods:
        kube.finish_pod(ns, pod["metadata"]["name"], 0, message=outcome)
    kube.wait_for(lambda: status(kube, ns).get("phase") == "Succeeded", 30, "phase Succeeded")
    assert status(kube, ns)["outputs"]["adapter"] == "pvc://models/sft/run/checkpoint-100"
    reasons = {e["reason"] for e in kube.events(ns, "sft")}
    assert {"Starting", "Training", "Completed"} <= reasons, reasons
