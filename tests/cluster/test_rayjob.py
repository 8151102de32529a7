"""`distributed.runtime: ray` on the real control plane: the operator creates KubeRay RayJobs (the API server
validates them against KubeRay's own CRD, installed by the session) and follows their status. No KubeRay
operator runs here: the test plays it, writing the RayJob's status as KubeRay does and creating the head
pod from the RayJob's head template (the real scheduler places it on a kwok node, which gives it a 127.x
address), where the launcher's real progress server answers as the driver's would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelforge.api.conditions import OUTCOME_PREFIX
from modelforge.launcher.progress import ProgressServer, ProgressTracker

from .kube import Kube
from .operator import OperatorProcess
from .test_finetunejob import condition, finetunejob, status


def ray_job(ns: str, name: str = "sft") -> dict[str, Any]:
    return finetunejob(ns, name, resources={"nodes": 2, "gpusPerNode": 4}, distributed={"runtime": "ray"})


def kuberay_reports(kube: Kube, ns: str, name: str, **fields: str) -> None:
    """What KubeRay writes into a RayJob's status as the job moves."""
    kube.patch("RayJob", ns, name, {"status": fields}, "status")


def head_pod(kube: Kube, ns: str, rayjob: dict[str, Any]) -> dict[str, Any]:
    """The head pod as KubeRay creates it from the RayJob's head group template; Running once kwok has it."""
    template = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    labels = {**template["metadata"]["labels"], "ray.io/node-type": "head"}
    kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{rayjob['metadata']['name']}-head",
                 "namespace": ns, "labels": labels}, "spec": template["spec"]})  # fmt: skip
    return kube.wait_for(lambda: (p := kube.get("Pod", ns, f"{rayjob['metadata']['name']}-head")) and
                         p.get("status", {}).get("podIP") and p, 60, "the head pod running")  # fmt: skip


def phase_is(kube: Kube, ns: str, phase: str, timeout: float = 30) -> dict[str, Any]:
    return kube.wait_for(lambda: (s := status(kube, ns)).get("phase") == phase and s, timeout, f"phase {phase}")


def test_a_rayjob_goes_pending_running_succeeded(kube: Kube, operator: OperatorProcess, claims: str,
                                                 tmp_path: Path) -> None:  # fmt: skip
    ns = claims
    kube.create(ray_job(ns))
    rayjob = kube.wait_for(lambda: kube.get("RayJob", ns, "sft-a1"), 30, "the RayJob of attempt 1")
    assert kube.get("Job", ns, "sft-a1") is None and kube.get("Service", ns, "sft-a1") is None
    assert kube.get("ConfigMap", ns, "sft-a1") is not None
    workers = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == 2 and workers["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] == "4"  # fmt: skip
    owner = rayjob["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("FineTuneJob", "sft")

    kube.wait_for(lambda: "KubeRay has not picked" in condition(kube, ns, "Running").get("message", ""), 30,
                  "Starting, waiting for KubeRay")  # fmt: skip
    assert status(kube, ns)["phase"] == "Starting"
    kuberay_reports(kube, ns, "sft-a1", jobDeploymentStatus="Initializing")
    kube.wait_for(lambda: "starting the Ray cluster" in condition(kube, ns, "Running").get("message", ""), 30,
                  "the cluster being started")  # fmt: skip

    head = head_pod(kube, ns, rayjob)
    log = tmp_path / "logging.jsonl"
    log.write_text(json.dumps({"loss": 0.75, "epoch": 0.5, "global_step/max_steps": "50/100"}) + "\n")
    server = ProgressServer(ProgressTracker(log), port=8090, host=head["status"]["podIP"]).start()
    try:
        kuberay_reports(kube, ns, "sft-a1", jobDeploymentStatus="Running", jobStatus="RUNNING", jobId="sft-a1-x")
        running = kube.wait_for(lambda: (s := status(kube, ns)).get("progress", {}).get("step") == 50 and s, 30,
                                "Running with the head's progress")  # fmt: skip
        assert running["phase"] == "Running" and running["progress"]["loss"] == 0.75
    finally:
        server.stop()

    kuberay_reports(kube, ns, "sft-a1", jobDeploymentStatus="Complete", jobStatus="SUCCEEDED",
                    message="Job finished successfully.")  # fmt: skip
    done = phase_is(kube, ns, "Succeeded")
    assert done["outputs"] == {"outputDir": "pvc://models/sft/run", "adapter": "pvc://models/sft/run/last-checkpoint"}
    reasons = [e["reason"] for e in sorted(kube.events(ns, "sft"), key=lambda e: e["metadata"]["creationTimestamp"])]
    assert reasons[:1] == ["Starting"] and "Training" in reasons and reasons[-1] == "Completed", reasons


def failed_message(outcome: dict[str, Any]) -> str:
    return ("Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\n"
            f"{OUTCOME_PREFIX}{json.dumps(outcome)}\n")  # fmt: skip


def test_a_failed_rayjob_restarts_the_gang_then_fails_for_good(kube: Kube, operator: OperatorProcess,
                                                               claims: str) -> None:  # fmt: skip
    ns = claims
    kube.create(ray_job(ns))
    kube.wait_for(lambda: kube.get("RayJob", ns, "sft-a1"), 30, "the RayJob of attempt 1")
    kuberay_reports(kube, ns, "sft-a1", jobDeploymentStatus="Running", jobStatus="RUNNING")
    phase_is(kube, ns, "Running")
    died = {"outcome": "Failed", "reason": "RankFailed", "message": "rank 3 died (Signal 9)", "retryable": True,
            "last_step": 40, "last_checkpoint": "pvc://models/sft/run/checkpoint-40"}  # fmt: skip
    kuberay_reports(kube, ns, "sft-a1", jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed",
                    message=failed_message(died))  # fmt: skip

    # A new attempt: a new RayJob, the old one deleted (KubeRay deletes its Ray cluster with it).
    kube.wait_for(lambda: kube.get("RayJob", ns, "sft-a2"), 30, "the RayJob of attempt 2")
    kube.wait_for(lambda: kube.get("RayJob", ns, "sft-a1") is None, 30, "attempt 1's RayJob deleted")
    st = status(kube, ns)
    assert st["restarts"] == 1 and st["latestCheckpoint"] == "pvc://models/sft/run/checkpoint-40"
    warnings = [e for e in kube.events(ns, "sft") if e["reason"] == "Restarting"]
    assert warnings and "RankFailed: rank 3 died" in warnings[0]["message"]

    bad_data = {
        "outcome": "Failed",
        "reason": "DataError",
        "retryable": False,
        "message": "dataset pre-flight found 1 problem(s) in 1 file(s); first: chat.jsonl:3: not JSON",
    }
    kuberay_reports(kube, ns, "sft-a2", jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed",
                    message=failed_message(bad_data))  # fmt: skip
    failed = phase_is(kube, ns, "Failed")
    reason = next(c for c in failed["conditions"] if c["type"] == "Failed")
    assert reason["reason"] == "DataError" and "chat.jsonl:3" in reason["message"]
    assert failed["restarts"] == 1, "a permanent failure is not retried"
