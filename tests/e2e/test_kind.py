"""End to end on a kind cluster built here (tests/e2e/kindcluster.py): the images `make images` built, loaded
into the node; the chart installed; the tiny model fine-tuned to Succeeded with progress observed in a real
container on a local-path claim; served with the swift engine; a question answered through port-forward.

Run with `make e2e` (MODELFORGE_E2E=1). Not yet part of `make test` and CI (issue 27: the rest of the story,
and the CI budget with it); there it skips with that reason. KEEP_CLUSTER=1 keeps the cluster for debugging.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e import kindcluster
from tests.images.pod import docker, image_name

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
NS = "e2e"
HELM = str(ROOT / ".tools" / "bin" / "helm")
IMAGES = ("operator", "trainer-cpu")


def _missing() -> str | None:
    if not os.environ.get("MODELFORGE_E2E"):
        return "the kind e2e runs with `make e2e` (MODELFORGE_E2E=1); not yet in `make test` and CI (issue 27)"
    if docker("info", check=False).returncode != 0:
        return "no Docker engine answers: run scripts/docker.sh up (as root)"
    absent = [image_name(n) for n in IMAGES if docker("image", "inspect", image_name(n), check=False).returncode]
    return f"images not built: {', '.join(absent)}: run make images BASE=local" if absent else None


REASON = _missing()
if REASON:
    pytest.skip(f"kind e2e skipped: {REASON}", allow_module_level=True)


def sh(*args: str, timeout: float = 900, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(args), flush=True)
    env = {**os.environ, "KUBECONFIG": str(kindcluster.kubeconfig_path())}
    return subprocess.run(list(args), text=True, capture_output=True, timeout=timeout, check=check, env=env, **kw)


def kubectl(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return sh(str(kindcluster.bin_dir() / "kubectl"), *args, **kw)


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
    kindcluster.up()
    try:
        kindcluster.load([image_name(n) for n in IMAGES])
        node = kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout
        # A fake GPU: the CPU trainer ignores it, but the scheduler sees the capacity jobs ask for.
        kubectl("patch", "node", node, "--subresource=status", "--type=json", "-p",
                json.dumps([{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "4"}]))  # fmt: skip
        kubectl("create", "namespace", NS)
        # The chart's own image names are what `make images` tags: only the CPU trainer is set.
        sh(HELM, "install", "modelforge", str(ROOT / "helm" / "modelforge"), "--namespace", "modelforge-system",
           "--create-namespace", "--wait", "--timeout", "5m",
           "--set", f"trainer.image={image_name('trainer-cpu')},serving.swiftImage={image_name('trainer-cpu')}",
           "--set", "operator.pollSeconds=3")  # fmt: skip
        yield
    finally:
        if not os.environ.get("KEEP_CLUSTER"):
            kindcluster.down()


def test_finetune_then_serve_then_chat(cluster):
    apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})  # fmt: skip
    # Init step: build the tiny model and its data on the claim (no hub anywhere).
    apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "tiny-model"}, "spec": {"backoffLimit": 0,
           "template": {"spec": {"restartPolicy": "Never", "containers": [{
               "name": "build", "image": image_name("trainer-cpu"), "imagePullPolicy": "Never",
               "command": ["modelforge", "tiny-model", "/mnt/models/tiny", "--dataset", "/mnt/models/data/chat.jsonl"],
               "volumeMounts": [{"name": "models", "mountPath": "/mnt/models"}]}],
               "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}]}}}})  # fmt: skip
    kubectl("wait", "-n", NS, "--for=condition=complete", "job/tiny-model", "--timeout=600s", timeout=700)
    apply(
        {
            "apiVersion": "modelforge.io/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "tiny"},
            "spec": {
                "model": {"source": "pvc://models/tiny", "modelType": "qwen3", "template": "qwen3"},
                "datasets": [{"source": "pvc://models/data/chat.jsonl"}],
                "hyperparameters": {
                    "maxSteps": 60,
                    "learningRate": 5e-3,
                    "batchSizePerDevice": 2,
                    "maxLength": 256,
                    "loggingSteps": 2,
                },
                "checkpointing": {"saveSteps": 20},
                "output": {"claimName": "models", "subPath": "jobs/tiny", "merge": True},
                "resources": {"memory": "4Gi", "cpu": "1"},
            },
        }
    )  # fmt: skip (the node has 2 CPUs, the control plane asks ~0.9)
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
    env = {**os.environ, "KUBECONFIG": str(kindcluster.kubeconfig_path())}
    forward = subprocess.Popen([str(kindcluster.bin_dir() / "kubectl"), "-n", NS, "port-forward", "svc/tiny",
                                f"{port}:8000"], env=env)  # fmt: skip
    try:

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for("the port-forward", listening, timeout=60, every=0.5)
        answer = sh(sys.executable, "-m", "modelforge.cli", "chat", "--endpoint", f"http://127.0.0.1:{port}/v1",
                    "--max-new-tokens", "16", "How do I reset my password?", timeout=300)  # fmt: skip
        assert answer.returncode == 0 and "[tiny:" in answer.stderr, answer.stderr
        assert answer.stdout.strip(), "the fine-tuned model gave an empty answer"
    finally:
        forward.terminate()
        forward.wait(30)
