"""End to end on a kind cluster: build and load the images, install the chart, fine-tune the tiny model to
Succeeded with progress observed, serve it with the swift engine, and ask it a question.

Run with `make e2e` where Docker and kind exist. It has NOT been executed in this project's CI (no Docker
engine there); it skips with the precise reason. KEEP_CLUSTER=1 keeps the cluster for debugging.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "modelforge-e2e"
NS = "e2e"
TAG = "e2e"
HELM = str(ROOT / ".tools" / "bin" / "helm") if (ROOT / ".tools" / "bin" / "helm").exists() else "helm"


def _missing() -> str | None:
    for tool in ("docker", "kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "docker is installed but no Docker engine answers (`docker info` fails)"
    return None


REASON = _missing()
if REASON:
    pytest.skip(f"kind e2e skipped: {REASON}", allow_module_level=True)


def sh(*args: str, timeout: float = 900, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(args), flush=True)
    return subprocess.run(list(args), text=True, capture_output=True, timeout=timeout, check=check, **kw)


def kubectl(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return sh("kubectl", "--context", f"kind-{CLUSTER}", *args, **kw)


def apply(manifest: dict | str) -> None:
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    kubectl("apply", "-n", NS, "-f", "-", input=text)


def wait_for(what: str, predicate, timeout: float = 900, every: float = 5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def status(kind: str, name: str) -> dict:
    result = kubectl("get", kind, name, "-n", NS, "-o", "json", check=False)
    return json.loads(result.stdout).get("status", {}) if result.returncode == 0 else {}


@pytest.fixture(scope="module")
def cluster():
    sh("kind", "create", "cluster", "--name", CLUSTER, "--wait", "120s")
    try:
        for image in ("operator", "trainer-cpu"):
            sh("docker", "build", "-f", f"images/{image}/Dockerfile", "-t", f"modelforge/{image}:{TAG}", ".",
               cwd=ROOT, timeout=3600)  # fmt: skip
            sh("kind", "load", "docker-image", f"modelforge/{image}:{TAG}", "--name", CLUSTER)
        node = kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout
        # A fake GPU: the CPU trainer ignores it, but the scheduler sees the capacity jobs ask for.
        kubectl("patch", "node", node, "--subresource=status", "--type=json", "-p",
                json.dumps([{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "4"}]))  # fmt: skip
        kubectl("create", "namespace", NS)
        sh(HELM, "install", "modelforge", str(ROOT / "helm" / "modelforge"), "--kube-context", f"kind-{CLUSTER}",
           "--namespace", "modelforge-system", "--create-namespace", "--wait", "--timeout", "5m",
           "--set", f"image.repository=modelforge/operator,image.tag={TAG},image.pullPolicy=Never",
           "--set", f"trainer.image=modelforge/trainer-cpu:{TAG},serving.swiftImage=modelforge/trainer-cpu:{TAG}",
           "--set", "operator.pollSeconds=3")  # fmt: skip
        yield
    finally:
        if not os.environ.get("KEEP_CLUSTER"):
            sh("kind", "delete", "cluster", "--name", CLUSTER, check=False)


def test_finetune_then_serve_then_chat(cluster):
    apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})  # fmt: skip
    # Init step: build the tiny model and its data on the claim (no hub anywhere).
    apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "tiny-model"}, "spec": {"backoffLimit": 0,
           "template": {"spec": {"restartPolicy": "Never", "containers": [{
               "name": "build", "image": f"modelforge/trainer-cpu:{TAG}", "imagePullPolicy": "Never",
               "command": ["modelforge", "tiny-model", "/mnt/models/tiny", "--dataset", "/mnt/models/data/chat.jsonl"],
               "volumeMounts": [{"name": "models", "mountPath": "/mnt/models"}]}],
               "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}]}}}})  # fmt: skip
    kubectl("wait", "-n", NS, "--for=condition=complete", "job/tiny-model", "--timeout=600s", timeout=700)
    apply({"apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "tiny"}, "spec": {
        "model": {"source": "pvc://models/tiny", "modelType": "qwen3", "template": "qwen3"},
        "datasets": [{"source": "pvc://models/data/chat.jsonl"}],
        "hyperparameters": {"maxSteps": 60, "batchSizePerDevice": 2, "maxLength": 256, "loggingSteps": 2},
        "checkpointing": {"saveSteps": 20},
        "output": {"claimName": "models", "subPath": "jobs/tiny", "merge": True},
        "resources": {"memory": "4Gi", "cpu": "2"}}})  # fmt: skip
    seen_progress = wait_for("progress", lambda: status("ftj", "tiny").get("progress", {}).get("step"))
    assert seen_progress >= 1
    final = wait_for("Succeeded", lambda: status("ftj", "tiny").get("phase") in ("Succeeded", "Failed")
                     and status("ftj", "tiny"))  # fmt: skip
    assert final["phase"] == "Succeeded", final
    assert final["outputs"]["mergedModel"] == "pvc://models/jobs/tiny/merged"

    apply({"apiVersion": "modelforge.io/v1alpha1", "kind": "ModelServe", "metadata": {"name": "tiny"}, "spec": {
        "model": {"fromFineTuneJob": "tiny"}, "engine": "swift", "resources": {"gpusPerReplica": 0}}})  # fmt: skip
    wait_for("Ready", lambda: status("mserve", "tiny").get("phase") == "Ready", timeout=600)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    forward = subprocess.Popen(["kubectl", "--context", f"kind-{CLUSTER}", "-n", NS, "port-forward", "svc/tiny",
                                f"{port}:8000"])  # fmt: skip
    try:
        time.sleep(3)
        answer = sh(sys.executable, "-m", "modelforge.cli", "chat", "--endpoint", f"http://127.0.0.1:{port}/v1",
                    "--max-new-tokens", "16", "How do I reset my password?", timeout=300)  # fmt: skip
        assert answer.returncode == 0 and "[tiny:" in answer.stderr
    finally:
        forward.terminate()
