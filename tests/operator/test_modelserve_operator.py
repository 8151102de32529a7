"""ModelServe operator: the real kopf against kmock; the test plays the cluster and the engine's /v1/models."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.operator.harness import Cluster, emulated_cluster, running_operator
from tests.operator.test_finetunejob_operator import NS, add_pod, finetunejob, terminated

pytestmark = pytest.mark.asyncio
POD_IP = "127.0.0.2"  # a second loopback address stands in for the pod IP; the engine port is 8000


@contextlib.contextmanager
def models_endpoint(models: list[str]) -> Iterator[None]:
    """A stand-in engine answering GET /v1/models like vLLM does."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in models]}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((POD_IP, 8000), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def modelserve(name: str = "chat", **spec: Any) -> dict[str, Any]:
    body = {"model": {"source": "Qwen/Qwen3-8B"}, **spec}
    return {"apiVersion": "modelforge.io/v1alpha1", "kind": "ModelServe",
            "metadata": {"name": name, "namespace": NS, "generation": 1}, "spec": body}  # fmt: skip


def serve_status(cluster: Cluster, name: str = "chat") -> dict[str, Any]:
    return (cluster.get("ModelServe", NS, name) or {}).get("status") or {}


async def ready_engine_pod(cluster: Cluster, serve: str) -> None:
    await cluster.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{serve}-7d9f-abcde", "namespace": NS, "labels": {"modelforge.io/serve": serve}},
        "spec": {"containers": [{"name": "engine", "image": "vllm"}]},
        "status": {"phase": "Running", "podIP": POD_IP, "conditions": [{"type": "Ready", "status": "True"}]},
    })  # fmt: skip
    await cluster.patch("Deployment", NS, serve, {"status": {"readyReplicas": 1, "replicas": 1}}, status=True)


async def test_create_ready_with_models_listed():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.create(modelserve(adapters=[{"name": "support", "source": "pvc://models/support"}]))
        deployment = await cluster.wait_for(lambda: cluster.get("Deployment", NS, "chat"), what="the Deployment")
        service = await cluster.wait_for(lambda: cluster.get("Service", NS, "chat"), what="the Service")  # after it
        assert service["spec"]["ports"][0]["port"] == 8000
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--enable-lora" in args and "--lora-modules" not in args  # adapters: live, from the ConfigMap
        adapters = await cluster.wait_for(lambda: cluster.get("ConfigMap", NS, "chat-adapters"), what="adapters")
        assert json.loads(adapters["data"]["adapters.json"]) == [{"name": "support", "path": "/mnt/pvc/models/support"}]
        await cluster.wait_for(lambda: serve_status(cluster).get("phase") == "Loading", what="phase Loading")
        with models_endpoint(["chat", "support"]):
            await ready_engine_pod(cluster, "chat")
            await cluster.wait_for(lambda: serve_status(cluster).get("phase") == "Ready", what="phase Ready")
        st = serve_status(cluster)
        assert st["models"] == ["chat", "support"] and st["readyReplicas"] == 1
        assert st["endpoint"] == "http://chat.team-a.svc:8000/v1"


async def test_missing_adapter_is_degraded():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.create(modelserve(adapters=[{"name": "support", "source": "pvc://models/support"}]))
        await cluster.wait_for(lambda: cluster.get("Deployment", NS, "chat"))
        with models_endpoint(["chat"]):
            await ready_engine_pod(cluster, "chat")
            await cluster.wait_for(lambda: serve_status(cluster).get("phase") == "Degraded", what="Degraded")
        degraded = next(c for c in serve_status(cluster)["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] == "AdapterMissing" and "support" in degraded["message"]


async def test_tp5_fails_before_anything_is_created():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.create(modelserve(model={"source": "Qwen/Qwen3-30B-A3B"}, tensorParallel=5))
        await cluster.wait_for(lambda: serve_status(cluster).get("phase") == "Failed", what="phase Failed")
        ready = next(c for c in serve_status(cluster)["conditions"] if c["type"] == "Ready")
        assert "does not divide the 32 attention heads" in ready["message"]
        assert cluster.get("Deployment", NS, "chat") is None


async def test_from_finetunejob_waits_then_serves_the_merged_model():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.create(finetunejob(suspend=True))  # parked: its phase stays Suspended until we finish it
        await cluster.wait_for(lambda: (cluster.get("FineTuneJob", NS, "sft") or {}).get("status", {}).get("phase")
                               == "Suspended")  # fmt: skip
        await cluster.create(modelserve(model={"fromFineTuneJob": "sft"}))
        await cluster.wait_for(lambda: serve_status(cluster).get("phase") == "Pending", what="phase Pending")
        waiting = next(c for c in serve_status(cluster)["conditions"] if c["type"] == "ModelAvailable")
        assert waiting["reason"] == "WaitingForModel" and "sft" in waiting["message"]
        assert cluster.get("Deployment", NS, "chat") is None
        # As the operator records a success: the Succeeded condition (phase is derived from it) and the outputs.
        succeeded = {"type": "Succeeded", "status": "True", "reason": "Completed", "message": "trained",
                     "lastTransitionTime": "2026-12-01T12:00:00Z"}  # fmt: skip
        await cluster.patch("FineTuneJob", NS, "sft", {"status": {"phase": "Succeeded", "conditions": [succeeded],
            "outputs": {"adapter": "pvc://models/sft/run/checkpoint-100", "mergedModel": "pvc://models/sft/merged"}}},
            status=True)  # fmt: skip
        deployment = await cluster.wait_for(lambda: cluster.get("Deployment", NS, "chat"), what="the Deployment")
        assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][0] == "/mnt/pvc/models/sft/merged"
        await cluster.wait_for(lambda: serve_status(cluster).get("modelPath") == "pvc://models/sft/merged",
                               what="status.modelPath")  # fmt: skip


async def test_finetunejob_serve_template_creates_a_modelserve_on_success():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.create(finetunejob(serve={"spec": {"engine": "swift", "resources": {"gpusPerReplica": 0}}}))
        await cluster.wait_for(lambda: cluster.get("Job", NS, "sft-a1"))
        outcome = {"outcome": "Succeeded", "reason": "Completed", "message": "ok",
                   "outputs": {"adapter": "pvc://models/sft/run/checkpoint-4"}}  # fmt: skip
        await add_pod(cluster, "sft", 1, "Succeeded", **terminated(outcome, 0))
        await cluster.patch("Job", NS, "sft-a1", {"status": {"conditions": [{"type": "Complete", "status": "True"}]}},
                            status=True)  # fmt: skip
        serve = await cluster.wait_for(lambda: cluster.get("ModelServe", NS, "sft"), what="the ModelServe")
        assert serve["spec"]["model"] == {"fromFineTuneJob": "sft"} and serve["spec"]["engine"] == "swift"
        assert "ownerReferences" not in serve["metadata"]  # deleting the job keeps the serve
        await cluster.wait_for(lambda: (cluster.get("FineTuneJob", NS, "sft") or {}).get("status", {})
                               .get("serveName") == "sft")  # fmt: skip
        deployment = await cluster.wait_for(lambda: cluster.get("Deployment", NS, "sft"), what="serve Deployment")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[:2] == ["--model", "Qwen/Qwen3-8B"] and "sft=/mnt/pvc/models/sft/run/checkpoint-4" in args


async def test_scaling_and_spec_changes_patch_the_deployment():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.create(modelserve())
        first = await cluster.wait_for(lambda: cluster.get("Deployment", NS, "chat"), what="the Deployment")
        first_hash = first["metadata"]["annotations"]["modelforge.io/spec-hash"]
        await cluster.patch("ModelServe", NS, "chat", {"spec": {"replicas": 3, "maxModelLen": 4096}})
        rolled = await cluster.wait_for(
            lambda: (d := cluster.get("Deployment", NS, "chat")) and d["spec"]["replicas"] == 3 and d, what="rescale"
        )
        assert rolled["metadata"]["annotations"]["modelforge.io/spec-hash"] != first_hash
        assert "--max-model-len" in rolled["spec"]["template"]["spec"]["containers"][0]["args"]
