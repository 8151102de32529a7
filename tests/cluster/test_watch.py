"""`modelforge watch` and `modelforge status` against the real API server, as a user runs them (the current
kubeconfig): watch follows a FineTuneJob from Queued through Running (its loss sparkline from the
launcher's real progress server) to Succeeded and exits 0, or to Failed and exits 1; status prints the
outputs."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from modelforge.launcher.progress import ProgressServer, ProgressTracker

from .kube import Kube, stop_process_group
from .operator import OperatorProcess
from .test_finetunejob import finetunejob, running_pods, status

MODELFORGE = [sys.executable, "-m", "modelforge.cli"]
LOSSES = (7.61, 6.5, 5.2, 3.3, 2.6, 2.03)


def watch(kubeconfig: Path, ns: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*MODELFORGE, "watch", "sft", "-n", ns, "--interval", "0.5", "--timeout", "120"],
                            env={**os.environ, "KUBECONFIG": str(kubeconfig)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def read_lines(proc: subprocess.Popen[str], into: queue.Queue[str | None]) -> None:
    """Every line of the process's stdout as it comes, then None at its end."""
    assert proc.stdout is not None
    for line in proc.stdout:
        into.put(line)
    into.put(None)


def test_watch_follows_a_job_to_success_and_status_shows_its_outputs(
    kube: Kube, operator: OperatorProcess, claims: str, kubeconfig: Path, tmp_path: Path
) -> None:
    ns = claims
    # Through a queue, so that the job waits (Queued) until the test admits it, as Kueue would.
    kube.create(finetunejob(ns, scheduling={"queueName": "team-a"}))
    follower = watch(kubeconfig, ns)
    heading = f"FineTuneJob {ns}/sft: "
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=read_lines, args=(follower, lines), daemon=True).start()
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while not any(line.startswith(heading + "Queued") for line in seen):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"watch ended before the job was Queued: {''.join(seen)}"
            seen.append(line)
        kube.patch("Job", ns, "sft-a1", {"spec": {"suspend": False}})  # what Kueue does on admission
        pod = running_pods(kube, ns, "sft", 1, 1)[0]
        kube.wait_for(lambda: status(kube, ns).get("phase") == "Running", 30, "phase Running")
        # The launcher's real progress server on the pod's IP, following a logging.jsonl with a falling loss.
        log = tmp_path / "logging.jsonl"
        log.write_text("".join(json.dumps({"loss": loss, "global_step/max_steps": f"{10 * (i + 1)}/100"}) + "\n"
                               for i, loss in enumerate(LOSSES)))  # fmt: skip
        server = ProgressServer(ProgressTracker(log), port=8090, host=pod["status"]["podIP"]).start()
        try:
            kube.wait_for(lambda: len(status(kube, ns).get("progress", {}).get("lossHistory", [])) == len(LOSSES), 30,
                          "the loss history in status")  # fmt: skip
        finally:
            server.stop()
        outcome = {"outcome": "Succeeded", "reason": "Completed", "message": "trained 100 step(s)", "last_step": 100,
                   "total_steps": 100, "outputs": {"adapter": "pvc://models/sft/run/checkpoint-100"}}  # fmt: skip
        kube.finish_pod(ns, pod["metadata"]["name"], 0, message=outcome)
        follower.wait(90)
        while (line := lines.get(timeout=30)) is not None:  # what it printed up to its exit
            seen.append(line)
        out, err = "".join(seen), follower.stderr.read() if follower.stderr else ""
        for pipe in (follower.stdout, follower.stderr):
            if pipe is not None:
                pipe.close()
    finally:
        stop_process_group(follower)  # type: ignore[arg-type]
    assert follower.returncode == 0, (out, err)
    # Every redraw starts with the phase: from waiting in the queue, through Running, to Succeeded last.
    phases = [line[len(heading) :] for line in out.splitlines() if line.startswith(heading)]
    assert phases[0] in ("Pending", "Queued") and phases[-1] == "Succeeded", out
    assert "Queued" in phases and "Running" in phases[phases.index("Queued") :], out
    assert "[##############################] 100/100 (100%)" in out, out
    (sparkline,) = {line for line in out.splitlines() if line.startswith("  loss        ")}
    assert sparkline.endswith(f"  {LOSSES[0]} -> {LOSSES[-1]}") and len(sparkline.split()[1]) == len(LOSSES), out
    shown = subprocess.run([*MODELFORGE, "status", "sft", "-n", ns], env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "output      adapter: pvc://models/sft/run/checkpoint-100" in shown.stdout, shown.stdout
    assert "Succeeded   True  Completed: trained 100 step(s)" in shown.stdout, shown.stdout


def test_watch_exits_1_when_the_job_fails(kube: Kube, operator: OperatorProcess, claims: str, kubeconfig: Path) -> None:
    ns = claims
    kube.create(finetunejob(ns))
    follower = watch(kubeconfig, ns)
    pod = running_pods(kube, ns, "sft", 1, 1)[0]
    outcome = {"outcome": "Failed", "reason": "DataError", "message": "datasets[0]: line 3 is not JSON",
               "retryable": False}  # fmt: skip
    kube.finish_pod(ns, pod["metadata"]["name"], 2, message=outcome)
    out, err = follower.communicate(timeout=90)
    assert follower.returncode == 1, (out, err)
    assert f"FineTuneJob {ns}/sft: Failed" in out and "DataError: datasets[0]: line 3 is not JSON" in out, out
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    missing = subprocess.run([*MODELFORGE, "status", "nope", "-n", ns], env=env, capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert missing.returncode == 1 and f"no FineTuneJob or ModelServe nope in namespace {ns}" in missing.stderr
