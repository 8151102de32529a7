"""FineTuneJob operator: the real kopf against the kmock emulator, the test playing the cluster."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from modelforge.launcher.progress import ProgressServer, ProgressTracker
from tests.operator.harness import Cluster, emulated_cluster, running_operator

pytestmark = pytest.mark.asyncio
NS = "team-a"


def finetunejob(name: str = "sft", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"source": "Qwen/Qwen3-8B"},
        "datasets": [{"source": "pvc://data/chat.jsonl"}],
        "hyperparameters": {"maxSteps": 100},
        "output": {"claimName": "models"},
        "failurePolicy": {"maxRestarts": 2, "backoffSeconds": 0},
    }
    body.update(spec)
    metadata = {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1}
    return {"apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob", "metadata": metadata, "spec": body}


def status(cluster: Cluster, name: str = "sft") -> dict[str, Any]:
    return (cluster.get("FineTuneJob", NS, name) or {}).get("status") or {}


def condition(cluster: Cluster, kind: str, name: str = "sft") -> dict[str, Any]:
    return next((c for c in status(cluster, name).get("conditions", []) if c["type"] == kind), {})


async def add_pod(cluster: Cluster, job: str, attempt: int, phase: str, index: int = 0, **extra: Any) -> str:
    name = f"{job}-a{attempt}-{index}-abcde"
    await cluster.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {
            "modelforge.io/job": job, "modelforge.io/attempt": str(attempt),
            "batch.kubernetes.io/job-completion-index": str(index)}},
        "spec": {"containers": [{"name": "trainer", "image": "trainer"}]},
        "status": {"phase": phase, "podIP": "127.0.0.1", **extra},
    })  # fmt: skip
    return name


def terminated(outcome: dict[str, Any], code: int) -> dict[str, Any]:
    state = {"terminated": {"exitCode": code, "reason": "Error", "message": json.dumps(outcome)}}
    return {"containerStatuses": [{"name": "trainer", "state": state}]}


async def test_create_makes_children_with_the_launch_contract():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.create(finetunejob(resources={"nodes": 2, "gpusPerNode": 4}))
        job = await cluster.wait_for(lambda: cluster.get("Job", NS, "sft-a1"), what="the Job of attempt 1")
        assert cluster.get("Service", NS, "sft-a1")["spec"]["clusterIP"] == "None"
        config = json.loads(cluster.get("ConfigMap", NS, "sft-a1")["data"]["job.json"])
        assert config["spec"]["model"]["source"] == "Qwen/Qwen3-8B" and config["attempt"] == 1
        assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (2, 2)
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert (env["MODELFORGE_NNODES"], env["NPROC_PER_NODE"]) == ("2", "4")
        assert env["MASTER_ADDR"] == "sft-a1-0.sft-a1.team-a.svc"
        assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-sft"
        await cluster.wait_for(lambda: status(cluster).get("phase") == "Starting", what="phase Starting")
        st = status(cluster)
        assert (st["attempt"], st["gpus"], st["observedGeneration"]) == (1, 8, 1)
        assert condition(cluster, "Validated")["status"] == "True"
        event = await cluster.wait_for(
            lambda: next((e for e in cluster.events(NS) if e.get("reason") == "Starting"), None), what="an event"
        )
        assert event["type"] == "Normal" and event["involvedObject"]["name"] == "sft"
        assert event["message"] == "attempt 1: creating 2 pod(s) x 4 GPU(s)"


async def test_running_pod_and_progress_reach_status(tmp_path: Path):
    log = tmp_path / "logging.jsonl"
    log.write_text(json.dumps({"loss": 1.25, "learning_rate": 1e-4, "epoch": 0.3,
                               "global_step/max_steps": "30/100", "train_speed(s/it)": 0.5}) + "\n")  # fmt: skip
    server = ProgressServer(ProgressTracker(log, tokens_per_step=2000), port=0, host="127.0.0.1").start()
    try:
        async with emulated_cluster() as cluster, running_operator(cluster, progress_port=server.port):
            await cluster.create(finetunejob())
            await cluster.wait_for(lambda: cluster.get("Job", NS, "sft-a1"))
            await add_pod(cluster, "sft", 1, "Running")
            await cluster.wait_for(lambda: status(cluster).get("progress", {}).get("step") == 30, what="progress")
            st = status(cluster)
            assert st["phase"] == "Running"
            assert st["progress"]["summary"] == "30/100 (30%)" and st["progress"]["loss"] == 1.25
            assert st["progress"]["tokensPerSecond"] == 4000.0
            assert condition(cluster, "Running")["reason"] == "Training"
    finally:
        server.stop()


async def test_retryable_failure_starts_attempt_two():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.create(finetunejob())
        await cluster.wait_for(lambda: cluster.get("Job", NS, "sft-a1"))
        outcome = {"outcome": "Failed", "reason": "NCCL", "message": "NCCL watchdog timeout", "retryable": True,
                   "last_checkpoint": "pvc://models/sft/run/checkpoint-40"}  # fmt: skip
        await add_pod(cluster, "sft", 1, "Failed", **terminated(outcome, 75))
        await cluster.wait_for(lambda: cluster.get("Job", NS, "sft-a2"), what="attempt 2")
        assert cluster.get("Job", NS, "sft-a1") is None, "attempt 1 must be deleted before attempt 2"
        st = await cluster.wait_for(lambda: status(cluster).get("attempt") == 2 and status(cluster))
        assert st["restarts"] == 1 and st["latestCheckpoint"].endswith("checkpoint-40")
        assert st["phase"] in ("Starting", "Running")
        await cluster.wait_for(lambda: any(e.get("reason") == "Restarting" for e in cluster.events(NS)),
                               what="a Restarting event")  # fmt: skip


async def test_permanent_failure_fails_with_the_reason():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.create(finetunejob())
        await cluster.wait_for(lambda: cluster.get("Job", NS, "sft-a1"))
        outcome = {
            "outcome": "Failed",
            "reason": "DataError",
            "retryable": False,
            "message": "dataset pre-flight found 1 problem(s); first: /mnt/pvc/data/chat.jsonl:7: invalid JSON",
        }
        await add_pod(cluster, "sft", 1, "Failed", **terminated(outcome, 1))
        await cluster.wait_for(lambda: status(cluster).get("phase") == "Failed", what="phase Failed")
        failed = condition(cluster, "Failed")
        assert failed["reason"] == "DataError" and "chat.jsonl:7: invalid JSON" in failed["message"]
        assert cluster.get("Job", NS, "sft-a2") is None and status(cluster).get("restarts") is None


async def test_success_records_outputs():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.create(finetunejob(output={"claimName": "models", "merge": True}))
        await cluster.wait_for(lambda: cluster.get("Job", NS, "sft-a1"))
        outcome = {"outcome": "Succeeded", "reason": "Completed", "message": "trained 100 step(s)", "last_step": 100,
                   "total_steps": 100, "outputs": {"adapter": "pvc://models/sft/run/checkpoint-100",
                                                   "mergedModel": "pvc://models/sft/merged"}}  # fmt: skip
        await add_pod(cluster, "sft", 1, "Succeeded", **terminated(outcome, 0))
        await cluster.patch("Job", NS, "sft-a1", {"status": {"conditions": [{"type": "Complete", "status": "True"}]}},
                            status=True)  # fmt: skip
        await cluster.wait_for(lambda: status(cluster).get("phase") == "Succeeded", what="phase Succeeded")
        st = status(cluster)
        assert st["outputs"]["mergedModel"] == "pvc://models/sft/merged"
        assert st["progress"]["summary"] == "100/100 (100%)" and st["completionTime"]


async def test_suspend_and_resume():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.create(finetunejob())
        await cluster.wait_for(lambda: cluster.get("Job", NS, "sft-a1"))
        await cluster.patch("FineTuneJob", NS, "sft", {"spec": {"suspend": True}})
        await cluster.wait_for(lambda: status(cluster).get("phase") == "Suspended", what="phase Suspended")
        await cluster.wait_for(lambda: cluster.get("Job", NS, "sft-a1") is None, what="attempt 1 deleted")
        await cluster.patch("FineTuneJob", NS, "sft", {"spec": {"suspend": False}})
        await cluster.wait_for(lambda: cluster.get("Job", NS, "sft-a2"), what="attempt 2 after resume")
        assert status(cluster).get("restarts") is None


async def test_delete_completes_and_children_are_owned():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.create(finetunejob())
        await cluster.wait_for(lambda: cluster.get("Job", NS, "sft-a1"))
        # kopf's own finalizer (it stops the per-object timer); it must not block the deletion.
        assert cluster.get("FineTuneJob", NS, "sft")["metadata"].get("finalizers") == ["modelforge.io/finalizer"]
        await cluster.delete("FineTuneJob", NS, "sft")
        await cluster.wait_for(lambda: cluster.get("FineTuneJob", NS, "sft") is None, what="the job gone")
        for kind in ("Job", "Service", "ConfigMap"):
            owner = cluster.get(kind, NS, "sft-a1")["metadata"]["ownerReferences"][0]
            assert (owner["kind"], owner["uid"], owner["controller"]) == ("FineTuneJob", "uid-sft", True)


async def test_operator_restart_mid_run_creates_no_duplicates():
    async with emulated_cluster() as cluster:
        async with running_operator(cluster):
            await cluster.create(finetunejob())
            await cluster.wait_for(lambda: cluster.get("Job", NS, "sft-a1"))
            await add_pod(cluster, "sft", 1, "Running")
            await cluster.wait_for(lambda: status(cluster).get("phase") == "Running")
        before = status(cluster)
        async with running_operator(cluster):
            await asyncio.sleep(1.5)  # several timer ticks (0.2 s) of the restarted operator
        assert set(cluster.objects("Job", NS)) == {"sft-a1"}
        after = status(cluster)
        assert (after["attempt"], after["phase"], after["startTime"]) == (1, "Running", before["startTime"])


async def test_invalid_spec_is_refused_before_any_pod():
    async with emulated_cluster() as cluster, running_operator(cluster):
        bad = finetunejob(hyperparameters={"maxSteps": 10, "globalBatchSize": 3}, resources={"gpusPerNode": 2})
        await cluster.create(bad)
        await cluster.wait_for(lambda: status(cluster).get("phase") == "Failed", what="phase Failed")
        assert condition(cluster, "Validated")["reason"] == "InvalidSpec"
        assert "globalBatchSize 3" in condition(cluster, "Validated")["message"]
        assert cluster.objects("Job", NS) == {}


async def test_a_job_that_cannot_fit_is_refused_before_any_pod_with_the_plan():
    async with emulated_cluster() as cluster, running_operator(cluster):
        too_big = finetunejob(
            method="qlora",
            lora={"rank": 64, "alpha": 128},
            hyperparameters={"maxSteps": 10, "maxLength": 1024},
            resources={"gpuMemory": "8Gi"},
        )
        await cluster.create(too_big)
        await cluster.wait_for(lambda: status(cluster).get("phase") == "Failed", what="phase Failed")
        validated = condition(cluster, "Validated")
        assert (validated["status"], validated["reason"]) == ("False", "InsufficientGPUMemory")
        assert "does not fit" in validated["message"] and "GiB per GPU of 8" in validated["message"]
        plan = status(cluster)["plan"]
        assert plan["fits"] is False and plan["gpuMemoryGiBPerGpu"] > 7.4
        assert any("fits with" in note for note in plan["notes"]), plan["notes"]
        assert cluster.objects("Job", NS) == {} and cluster.objects("ConfigMap", NS) == {}
