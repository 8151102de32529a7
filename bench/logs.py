"""`modelforge logs` against the REAL local control plane (tests/cluster/controlplane.py): the API server
proxies pods/log to kwok's kubelet server, which serves a CRI-format log file.

A FineTuneJob whose status says attempt 1, and its rank-0 pod (both written here, as the operator and the
Job controller would), with a log of N lines (default 100,000, ~11 MB):
1. the whole log: `modelforge logs` vs `kubectl logs` (seconds), and `--tail 10`;
2. `-f`: a line appended to the file -> printed (latency), then the pod marked Succeeded -> `-f` exits.

Usage: python bench/logs.py [--lines 100000] [--repeats 3]
Needs the venv (make setup) and the cluster binaries (make cluster-build); starts the control plane if needed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.cluster import controlplane
from tests.cluster.kube import KUBECTL, Kube, log_text, stop_process_group
from tests.cluster.operator import Release

STAMP = "2026-12-03T10:00:00.000000000Z"


def timed(argv: list[str], env: dict[str, str], out: Path) -> float:
    """Seconds from start to exit, stdout to `out`."""
    started = time.monotonic()
    with out.open("wb") as sink:
        subprocess.run(argv, env=env, stdout=sink, stderr=subprocess.DEVNULL, check=True, timeout=300)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    controlplane.up()
    kube = Kube(controlplane.kubeconfig_path())
    env = {**os.environ, "KUBECONFIG": str(controlplane.kubeconfig_path())}
    # The chart, for its CRDs (as the cluster tier installs it); no operator runs: this script plays it.
    release = Release(controlplane.kubeconfig_path())
    release.install()
    kube.wait_for(lambda: kube.get("CustomResourceDefinition", None, "finetunejobs.modelforge.io"), 60)
    modelforge = [sys.executable, "-m", "modelforge.cli", "logs", "sft", "-n"]
    ns = kube.namespace("bench-logs")
    work = Path(tempfile.mkdtemp(prefix="mf-bench-logs-"))
    stack = contextlib.ExitStack()
    try:
        kube.create({"apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob",
                     "metadata": {"name": "sft", "namespace": ns},
                     "spec": {"model": {"source": "Qwen/Qwen3-8B"}, "datasets": [{"source": "pvc://data/c.jsonl"}],
                              "hyperparameters": {"maxSteps": 100}, "output": {"claimName": "models"}}})  # fmt: skip
        kube.patch("FineTuneJob", ns, "sft", {"status": {"phase": "Running", "attempt": 1}}, "status")
        pod = "sft-a1-0-bench"
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
                    "namespace": ns,
                    "labels": {
                        "modelforge.io/job": "sft",
                        "modelforge.io/attempt": "1",
                        "batch.kubernetes.io/job-completion-index": "0",
                    },
                },
                "spec": {"nodeName": "gpu-node-0", "containers": [{"name": "trainer", "image": "busybox"}]},
            }
        )
        kube.wait_for(lambda: (kube.get("Pod", ns, pod) or {}).get("status", {}).get("phase") == "Running", 30)
        log = work / "trainer.log"
        kube.serve_container_log(ns, pod, log)
        with log.open("a") as handle:
            for i in range(args.lines):
                handle.write(f"{STAMP} stdout F {{'loss': 1.2345, 'grad_norm': 0.98, 'learning_rate': 9.9e-05, "
                             f"'global_step/max_steps': '{i}/{args.lines}'}}\n")  # fmt: skip
        size = log.stat().st_size / 2**20
        print(f"{args.lines} lines, {size:.1f} MiB of CRI log, {args.repeats} repeats, {os.cpu_count()} cores")
        out = work / "out.txt"
        for name, argv in (("modelforge logs", [*modelforge, ns]),
                           ("kubectl logs", [str(KUBECTL), "logs", "-n", ns, pod, "-c", "trainer"]),
                           ("modelforge logs --tail 10", [*modelforge, ns, "--tail", "10"])):  # fmt: skip
            runs = [timed(argv, env, out) for _ in range(args.repeats)]
            if name == "modelforge logs":
                assert out.read_bytes() == log_text(log).encode(), "modelforge logs printed something else"
            print(f"{name:27}: {' '.join(f'{s:.2f}' for s in runs)} s (median {statistics.median(runs):.2f})")

        follower = subprocess.Popen([*modelforge, ns, "-f", "--tail", "0"], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        assert follower.stdout is not None
        stack.callback(lambda: stop_process_group(follower, grace=5))  # type: ignore[arg-type]
        time.sleep(3)
        latencies = []
        for i in range(5):
            started = time.monotonic()
            with log.open("a") as handle:
                handle.write(f"{STAMP} stdout F marker {i}\n")
            line = follower.stdout.readline().decode()
            assert f"marker {i}" in line, line
            latencies.append(time.monotonic() - started)
            time.sleep(0.5)
        print(f"-f, appended line -> printed: {' '.join(f'{s * 1000:.0f}' for s in latencies)} ms")
        started = time.monotonic()
        kube.patch("Pod", ns, pod, {"status": {"phase": "Succeeded"}}, "status")
        code = follower.wait(60)
        print(f"-f, pod Succeeded -> exit {code} after {time.monotonic() - started:.1f} s "
              f"(poll 2 s, then 2 s of waiting with nothing new)")  # fmt: skip
        follower.stdout.close()
    finally:
        stack.close()
        kube.delete("Namespace", None, ns)
        release.uninstall()
    return 0


if __name__ == "__main__":
    sys.exit(main())
