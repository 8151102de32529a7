"""`modelforge logs` against the real API server, as a user runs it (the current kubeconfig): the API server
proxies pods/log to kwok's kubelet server, which serves the file the container runtime (here the test,
`run_logged`) writes. Each pod's program runs with the env the kubelet would give it, so the line a rank
prints comes from that pod's own JOB_COMPLETION_INDEX. The follow mode against the real launcher is in
test_story.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .kube import Kube, container_env, run_logged
from .operator import OperatorProcess
from .test_finetunejob import finetunejob, running_pods

MODELFORGE = [sys.executable, "-m", "modelforge.cli"]
PRINT_RANK = "import os; print(f\"rank {os.environ['JOB_COMPLETION_INDEX']} of {os.environ['MODELFORGE_NNODES']}\")"


def logs(kubeconfig: Path, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MODELFORGE, "logs", "sft", "-n", ns, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": str(kubeconfig)}, check=False)  # fmt: skip


def test_logs_reads_the_pod_of_each_rank(kube: Kube, operator: OperatorProcess, claims: str, kubeconfig: Path,
                                          tmp_path: Path) -> None:  # fmt: skip
    ns = claims
    kube.create(finetunejob(ns, resources={"nodes": 2, "gpusPerNode": 8}))
    pods = running_pods(kube, ns, "sft", 1, 2)
    for pod in pods:
        log = tmp_path / pod["metadata"]["name"] / "trainer.log"
        kube.serve_container_log(ns, pod["metadata"]["name"], log)
        env = {**os.environ, **container_env(pod)}
        assert run_logged([sys.executable, "-c", PRINT_RANK + "; print('done')"], env, log, 60) == 0
    rank0, rank1, tail = logs(kubeconfig, ns), logs(kubeconfig, ns, "--rank", "1"), logs(kubeconfig, ns, "--tail", "1")
    assert (rank0.returncode, rank0.stdout) == (0, "rank 0 of 2\ndone\n"), rank0
    assert f"==> pod {pods[0]['metadata']['name']}, container trainer (Running)" in rank0.stderr, rank0.stderr
    assert (rank1.returncode, rank1.stdout) == (0, "rank 1 of 2\ndone\n"), rank1
    assert (tail.returncode, tail.stdout) == (0, "done\n"), tail
    missing = logs(kubeconfig, ns, "--rank", "2")
    assert missing.returncode == 1 and missing.stdout == "", missing
    said = "attempt 1 of FineTuneJob sft has pods only for ranks 0, 1 (phase Running); no pod for rank 2"
    assert said in missing.stderr, missing.stderr


def test_logs_of_a_job_with_no_pod_says_why(kube: Kube, operator: OperatorProcess, claims: str,
                                            kubeconfig: Path) -> None:  # fmt: skip
    ns = claims
    kube.create(finetunejob(ns, suspend=True))
    kube.wait_for(lambda: (kube.get("FineTuneJob", ns, "sft") or {}).get("status", {}).get("phase") == "Suspended",
                  30, "phase Suspended")  # fmt: skip
    shown = logs(kubeconfig, ns)
    assert shown.returncode == 1, shown
    assert "FineTuneJob sft has started no training pod yet (phase Suspended)" in shown.stderr, shown.stderr
    assert "Traceback" not in shown.stderr


def test_logs_attempt_reads_the_kept_failed_attempt_and_explains_a_retried_one(
    kube: Kube, operator: OperatorProcess, claims: str, kubeconfig: Path, tmp_path: Path
) -> None:
    """Attempt 1 is retried (its pods deleted), attempt 2 fails for good (its pod kept): `--attempt 2` reads the
    kept pod's log after the failure, `--attempt 1` says where its cause is instead."""
    ns = claims
    kube.create(finetunejob(ns, failurePolicy={"maxRestarts": 1, "backoffSeconds": 0}))
    (first,) = running_pods(kube, ns, "sft", 1, 1)
    retryable = {"outcome": "Failed", "reason": "NCCL", "message": "NCCL watchdog timeout", "retryable": True}
    kube.finish_pod(ns, first["metadata"]["name"], 75, message=retryable)
    (second,) = running_pods(kube, ns, "sft", 2, 1)
    log = tmp_path / second["metadata"]["name"] / "trainer.log"
    kube.serve_container_log(ns, second["metadata"]["name"], log)
    env = {**os.environ, **container_env(second)}
    assert run_logged([sys.executable, "-c", "print('chat.jsonl:7: invalid JSON')"], env, log, 60) == 0
    data_error = {"outcome": "Failed", "reason": "DataError", "message": "chat.jsonl:7: invalid JSON",
                  "retryable": False}  # fmt: skip
    kube.finish_pod(ns, second["metadata"]["name"], 1, message=data_error)
    kube.wait_for(lambda: (kube.get("FineTuneJob", ns, "sft") or {}).get("status", {}).get("phase") == "Failed", 30,
                  "phase Failed")  # fmt: skip
    assert kube.get("Job", ns, "sft-a2") is not None  # kept: its pod ended, nothing of it holds a GPU
    kept = logs(kubeconfig, ns, "--attempt", "2")
    assert (kept.returncode, kept.stdout) == (0, "chat.jsonl:7: invalid JSON\n"), kept
    assert f"==> pod {second['metadata']['name']}, container trainer (Failed)" in kept.stderr, kept.stderr
    gone = logs(kubeconfig, ns, "--attempt", "1")
    assert gone.returncode == 1 and "Traceback" not in gone.stderr, gone
    assert "attempt 1 of FineTuneJob sft has no pods any more" in gone.stderr, gone.stderr
    assert f"kubectl get events -n {ns} --field-selector involvedObject.name=sft" in gone.stderr, gone.stderr
