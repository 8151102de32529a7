"""FineTuneJob operator: the real kopf against the kmock emulator, the test playing the cluster.

The authority for operator behaviour is tests/cluster (the real control plane). What stays here is a fast
loop (under a second per test) for the refusals decided before any pod, and success bookkeeping."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.test_finetunejob import finetunejob as cluster_finetunejob
from tests.operator.harness import Cluster, emulated_cluster, running_operator

pytestmark = pytest.mark.asyncio
NS = "team-a"


def finetunejob(name: str = "sft", **spec: Any) -> dict[str, Any]:
    obj = cluster_finetunejob(NS, name, **spec)
    obj["metadata"].update(uid=f"uid-{name}", generation=1)  # what the API server would add (kmock does not)
    return obj


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
