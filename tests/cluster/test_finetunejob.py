"""FineTuneJob on the real control plane: the real Job controller makes the pods, the real scheduler
places them on kwok's GPU nodes, the test plays the kubelet's exits, and the real launcher progress
server answers at rank 0's pod IP."""

from __future__ import annotations

import json
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
    tracker = ProgressTracker(progress_log, tokens_per_step=2000)
    tracker.set_checkpoint("pvc://models/sft/run/checkpoint-20")  # the launcher's newest whole checkpoint
    server = ProgressServer(tracker, port=8090, host=rank0_ip).start()
    try:
        kube.wait_for(lambda: status(kube, ns).get("progress", {}).get("step") == 30, 30, "progress in status")
        st = status(kube, ns)
        assert st["phase"] == "Running" and st["progress"]["loss"] == 1.25
        assert st["latestCheckpoint"] == "pvc://models/sft/run/checkpoint-20"  # while running, not at the end
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


def test_progress_silent_past_the_stall_timeout_is_a_warning(
    kube: Kube, operator: OperatorProcess, claims: str, progress_log: Path, kubeconfig: Path
) -> None:
    """Rank 0's /progress answers (the launcher's real progress server on the pod's IP), then stops: past
    stallTimeoutSeconds the job says so (ProgressReported=False, one Warning event) and stays Running; when it
    answers again the condition is True."""
    ns = claims
    kube.create(finetunejob(ns, failurePolicy={"stallTimeoutSeconds": 4}))
    (pod,) = running_pods(kube, ns, "sft", 1, 1)
    tracker = ProgressTracker(progress_log, tokens_per_step=2000)
    server = ProgressServer(tracker, port=8090, host=pod["status"]["podIP"]).start()
    try:
        kube.wait_for(lambda: status(kube, ns).get("progress", {}).get("readAt"), 30, "a first progress read")
    finally:
        server.stop()
    silent = kube.wait_for(lambda: condition(kube, ns, "ProgressReported"), 40, "ProgressReported")
    assert (silent["status"], silent["reason"]) == ("False", "NoProgressReport"), silent
    read = status(kube, ns)["progress"]["readAt"]
    assert "has been silent for longer than failurePolicy.stallTimeoutSeconds (4 s) (its last answer recorded " \
           f"at {read}); its last report: 30/100 (30%)" in silent["message"], silent  # fmt: skip
    assert status(kube, ns)["phase"] == "Running"
    described = kubectl(kubeconfig, "describe", "ftj", "sft", "-n", ns).stdout
    assert "ProgressReported" in described and "NoProgressReport" in described, described
    warned = kube.wait_for(lambda: [e for e in kube.events(ns, "sft") if e["reason"] == "NoProgressReport"], 30,
                           "the NoProgressReport event")  # fmt: skip
    assert [e["type"] for e in warned] == ["Warning"], warned
    server = ProgressServer(tracker, port=8090, host=pod["status"]["podIP"]).start()
    try:
        kube.wait_for(lambda: condition(kube, ns, "ProgressReported").get("status") == "True", 30, "ProgressResumed")
        assert condition(kube, ns, "ProgressReported")["reason"] == "ProgressResumed"
    finally:
        server.stop()


def retryable(message: str = "NCCL watchdog timeout") -> dict[str, Any]:
    return {"outcome": "Failed", "reason": "NCCL", "message": message, "retryable": True,
            "last_checkpoint": "pvc://models/sft/run/checkpoint-40"}  # fmt: skip


def test_gang_restart_then_restart_limit(kube: Kube, operator: OperatorProcess, claims: str) -> None:
    ns = claims
    kube.create(finetunejob(ns, resources={"nodes": 2, "gpusPerNode": 4},
                            failurePolicy={"maxRestarts": 1, "backoffSeconds": 0}))  # fmt: skip
    pods = running_pods(kube, ns, "sft", 1, 2)
    # Rank 1 dies with the launcher's retryable termination message; rank 0 is still running.
    kube.finish_pod(ns, pods[1]["metadata"]["name"], 75, message=retryable())
    kube.wait_for(lambda: kube.get("Job", ns, "sft-a2"), 30, "attempt 2's Job")
    # The whole gang of attempt 1 is gone (the real garbage collector removed its pods), attempt 2 runs.
    kube.wait_for(lambda: not pods_of(kube, ns, "sft", 1) and kube.get("Job", ns, "sft-a1") is None, 30,
                  "attempt 1 torn down")  # fmt: skip
    st = status(kube, ns)
    assert (st["attempt"], st["restarts"]) == (2, 1) and st["latestCheckpoint"].endswith("checkpoint-40")
    config = json.loads(kube.get("ConfigMap", ns, "sft-a2")["data"]["job.json"])
    assert config["attempt"] == 2
    pods = running_pods(kube, ns, "sft", 2, 2)
    kube.finish_pod(ns, pods[0]["metadata"]["name"], 75, message=retryable("rendezvous timed out"))
    kube.wait_for(lambda: status(kube, ns).get("phase") == "Failed", 30, "phase Failed")
    failed = condition(kube, ns, "Failed")
    assert failed["reason"] == "RestartLimitExceeded" and "rendezvous timed out" in failed["message"]
    assert kube.get("Job", ns, "sft-a3") is None
    assert any(e["reason"] == "Restarting" and e["type"] == "Warning" for e in kube.events(ns, "sft"))


@pytest.mark.parametrize(
    ("exit_code", "reason", "message", "expected"),
    [
        (1, "Error", {"outcome": "Failed", "reason": "DataError", "retryable": False,
                      "message": "/mnt/data/chat.jsonl:7: invalid JSON"}, "DataError"),
        (137, "OOMKilled", "", "OOMKilled"),
    ],
    ids=["data-error", "oom-killed"],
)  # fmt: skip
def test_permanent_failures_fail_with_the_cause(kube: Kube, operator: OperatorProcess, claims: str, exit_code: int,
                                                reason: str, message: Any, expected: str) -> None:  # fmt: skip
    ns = claims
    kube.create(finetunejob(ns))
    pod = running_pods(kube, ns, "sft", 1, 1)[0]
    kube.finish_pod(ns, pod["metadata"]["name"], exit_code, reason, message)
    kube.wait_for(lambda: status(kube, ns).get("phase") == "Failed", 30, "phase Failed")
    failed = condition(kube, ns, "Failed")
    assert failed["reason"] == expected, failed
    if expected == "DataError":
        assert "chat.jsonl:7: invalid JSON" in failed["message"]
    assert kube.get("Job", ns, "sft-a2") is None and not status(kube, ns).get("restarts")


@pytest.mark.parametrize(("disruption", "expected"), [("PreemptionByScheduler", "Preempted"),
                                                      ("DeletionByTaintManager", "NodeLost")])  # fmt: skip
def test_disruption_restarts_the_gang(kube: Kube, operator: OperatorProcess, claims: str, disruption: str,
                                      expected: str) -> None:  # fmt: skip
    ns = claims
    kube.create(finetunejob(ns))
    pod = running_pods(kube, ns, "sft", 1, 1)[0]
    kube.disrupt_pod(ns, pod["metadata"]["name"], disruption, f"{disruption} (test)")
    kube.wait_for(lambda: kube.get("Job", ns, "sft-a2"), 30, "attempt 2 after the disruption")
    restarting = [e for e in kube.events(ns, "sft") if e["reason"] == "Restarting"]
    assert restarting and expected in restarting[0]["message"], restarting


def test_more_gpus_than_any_node_shows_the_scheduler_message(kube: Kube, operator: OperatorProcess,
                                                             claims: str) -> None:  # fmt: skip
    ns = claims
    kube.create(finetunejob(ns, resources={"gpusPerNode": 16}))
    kube.wait_for(lambda: condition(kube, ns, "Running").get("reason") == "Unschedulable", 30, "Unschedulable")
    message = condition(kube, ns, "Running")["message"]
    assert "Insufficient nvidia.com/gpu" in message and "0/3 nodes are available" in message, message


def test_pods_refused_by_a_resource_quota(kube: Kube, operator: OperatorProcess, claims: str) -> None:
    ns = claims
    kube.create({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpus", "namespace": ns},
                 "spec": {"hard": {"requests.nvidia.com/gpu": "1"}}})  # fmt: skip
    # Until the quota controller has computed the quota's usage, refusals read "status unknown for quota".
    kube.wait_for(lambda: (kube.get("ResourceQuota", ns, "gpus") or {}).get("status", {}).get("hard"), 30,
                  "the quota's status")  # fmt: skip
    kube.create(finetunejob(ns, resources={"gpusPerNode": 4}))
    kube.wait_for(lambda: condition(kube, ns, "Running").get("reason") == "PodsRefused", 30, "PodsRefused")
    message = condition(kube, ns, "Running")["message"]
    assert "exceeded quota" in message and "requests.nvidia.com/gpu" in message, message
    assert status(kube, ns)["phase"] == "Starting"


# Pods refused by PodSecurity (a spec that adds IPC_LOCK) say PodsRefused: tests/cluster/test_pod_security.py.


def test_delete_removes_every_child_through_the_garbage_collector(kube: Kube, operator: OperatorProcess,
                                                                   claims: str) -> None:  # fmt: skip
    ns = claims
    kube.create(finetunejob(ns, resources={"nodes": 2, "gpusPerNode": 1}))
    running_pods(kube, ns, "sft", 1, 2)
    kube.delete("FineTuneJob", ns, "sft")

    def gone() -> bool:
        return (kube.get("FineTuneJob", ns, "sft") is None and kube.get("Job", ns, "sft-a1") is None
                and kube.get("Service", ns, "sft-a1") is None and kube.get("ConfigMap", ns, "sft-a1") is None
                and not pods_of(kube, ns, "sft", 1))  # fmt: skip

    kube.wait_for(gone, 60, "the FineTuneJob and all its children gone")


def test_operator_killed_mid_run_makes_no_duplicates(kube: Kube, operator: OperatorProcess, claims: str,
                                                     progress_log: Path) -> None:  # fmt: skip
    ns = claims
    kube.create(finetunejob(ns))
    pod = running_pods(kube, ns, "sft", 1, 1)[0]
    server = ProgressServer(ProgressTracker(progress_log, tokens_per_step=100), port=8090,
                            host=pod["status"]["podIP"]).start()  # fmt: skip
    try:
        kube.wait_for(lambda: status(kube, ns).get("progress", {}).get("step") == 30, 30, "progress 30")
        before = status(kube, ns)
        operator.kill()
        with progress_log.open("a") as f:
            f.write(json.dumps({"loss": 0.9, "global_step/max_steps": "60/100"}) + "\n")
        operator.start()
        # The restarted operator reconciles (it reads the new progress) ...
        kube.wait_for(lambda: status(kube, ns).get("progress", {}).get("step") == 60, 30, "progress 60")
    finally:
        server.stop()
    # ... and has created nothing twice.
    assert [j["metadata"]["name"] for j in kube.list("Job", ns)] == ["sft-a1"]
    assert len(pods_of(kube, ns, "sft", 1)) == 1
    after = status(kube, ns)
    assert (after["attempt"], after["startTime"]) == (1, before["startTime"])


def test_suspend_and_resume(kube: Kube, operator: OperatorProcess, claims: str) -> None:
    ns = claims
    kube.create(finetunejob(ns))
    running_pods(kube, ns, "sft", 1, 1)
    kube.patch("FineTuneJob", ns, "sft", {"spec": {"suspend": True}})
    kube.wait_for(lambda: status(kube, ns).get("phase") == "Suspended", 30, "phase Suspended")
    kube.wait_for(lambda: kube.get("Job", ns, "sft-a1") is None and not pods_of(kube, ns, "sft", 1), 30,
                  "attempt 1 and its pods deleted")  # fmt: skip
    kube.patch("FineTuneJob", ns, "sft", {"spec": {"suspend": False}})
    running_pods(kube, ns, "sft", 2, 1)
    assert not status(kube, ns).get("restarts")


def test_a_spec_edit_while_running_is_applied_never_ignored(kube: Kube, operator: OperatorProcess, claims: str,
                                                           kubeconfig: Path) -> None:  # fmt: skip
    ns = claims
    kube.create(finetunejob(ns))
    running_pods(kube, ns, "sft", 1, 1)
    kube.wait_for(lambda: status(kube, ns).get("phase") == "Running", 30, "phase Running")
    # A field applied as it goes: no new pods.
    kube.patch("FineTuneJob", ns, "sft", {"spec": {"failurePolicy": {"maxRestarts": 5}}})
    kube.wait_for(lambda: status(kube, ns).get("attemptGeneration") == 2, 30, "generation 2 taken by attempt 1")
    assert status(kube, ns)["attempt"] == 1
    # A field the pods see: attempt 1 is replaced by attempt 2 with the new resources, not counted as a restart.
    kube.patch("FineTuneJob", ns, "sft", {"spec": {"resources": {"gpusPerNode": 2}}})
    pod = running_pods(kube, ns, "sft", 2, 1)[0]
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    kube.wait_for(lambda: kube.get("Job", ns, "sft-a1") is None, 30, "attempt 1 deleted")
    st = status(kube, ns)
    assert (st["attempt"], st.get("restarts"), st["attemptGeneration"]) == (2, None, 3), st
    changed = [e for e in kube.events(ns, "sft") if e["reason"] == "SpecChanged"]
    assert changed and "spec.resources changed" in changed[0]["message"], changed
    # What can never change is refused at `kubectl apply` time, with the reason.
    out = kubectl(kubeconfig, "patch", "ftj", "sft", "-n", ns, "--type=merge", "-p",
                  '{"spec": {"hyperparameters": {"maxSteps": 7}}}', check=False)  # fmt: skip
    assert out.returncode != 0 and "cannot change after the job is created" in out.stderr, out.stderr
