"""The operator at scale against the REAL local control plane (tests/cluster/controlplane.py).

The chart is installed with its defaults (pollSeconds 10) and the operator runs as its own process with
the chart's ServiceAccount, as in tests/cluster. Every request it makes is counted from the API server's
audit log (tests/cluster/controlplane.py: AUDIT_POLICY).

1. burst: N FineTuneJobs created at once (default 500) -> time until each one's Job exists (watched), p50/p99,
   operator RSS and CPU, API requests per job.
2. steady: R resident FineTuneJobs (default 5000), of which A are active (default 50) and the rest finished;
   the operator restarted over them; then its request rate over a window (default 60 s) and RSS.

Usage: python bench/operator_scale.py [--jobs 500] [--resident 5000] [--active 50] [--window 60]
Needs the venv (make setup) and the cluster binaries (make cluster-build); starts the control plane if needed.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.cluster import controlplane
from tests.cluster.kube import Kube
from tests.cluster.operator import OperatorProcess, Release

OPERATOR_GROUP = "system:serviceaccounts:modelforge-system"


def spec(ns: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": f"job-{index:05d}", "namespace": ns},
        "spec": {"model": {"source": "Qwen/Qwen3-8B"}, "datasets": [{"source": "pvc://data/chat.jsonl"}],
                 "hyperparameters": {"maxSteps": 10}, "output": {"claimName": "models"}},
    }  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Audit:
    """The operator's requests, read from the API server's audit log."""

    def __init__(self) -> None:
        self.path = controlplane.audit_log_path()
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def since_mark(self) -> list[dict[str, Any]]:
        time.sleep(2)  # the audit backend writes in batches (at most 1 s apart)
        with self.path.open("rb") as f:
            f.seek(self.offset)
            lines = f.read().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if OPERATOR_GROUP in e.get("user", {}).get("groups", [])
                and e.get("stage") == "ResponseComplete"]  # fmt: skip

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0


def summarize(events: list[dict[str, Any]]) -> str:
    counts = collections.Counter(f"{e['verb']} {e.get('objectRef', {}).get('resource', '?')}"
                                 + ("/" + e["objectRef"]["subresource"] if e.get("objectRef", {}).get("subresource")
                                    else "") for e in events)  # fmt: skip
    return ", ".join(f"{k} {v}" for k, v in counts.most_common(8))


class Sampler:
    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def cpu(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system


def create_all(kube: Kube, objs: list[dict[str, Any]], created: dict[str, float] | None = None) -> None:
    def create(obj: dict[str, Any]) -> None:
        kube.create(obj)
        if created is not None:
            created[obj["metadata"]["name"]] = time.monotonic()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, objs))


def burst(kube: Kube, op: OperatorProcess, jobs: int, timeout: float) -> None:
    ns = kube.namespace("bench-burst")
    kube.claim(ns, "data")
    kube.claim(ns, "models")
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch_jobs() -> None:
        batch = kubernetes.client.BatchV1Api(kube.client)
        for event in kubernetes.watch.Watch().stream(batch.list_namespaced_job, ns, timeout_seconds=int(timeout)):
            seen.setdefault(event["object"].metadata.name.removesuffix("-a1"), time.monotonic())
            if len(seen) >= jobs or done.is_set():
                return

    watcher = threading.Thread(target=watch_jobs, daemon=True)
    watcher.start()
    audit = Audit()
    sampler = Sampler(op.proc.pid)  # type: ignore[union-attr]
    cpu0 = sampler.cpu()
    created: dict[str, float] = {}
    start = time.monotonic()
    create_all(kube, [spec(ns, i) for i in range(jobs)], created)
    watcher.join(timeout)
    total = time.monotonic() - start
    time.sleep(12)  # one more poll: status patches of the new attempts settle
    done.set()
    events = audit.since_mark()
    cpu = sampler.cpu() - cpu0
    sampler.stop.set()
    latencies = [seen[n] - created[n] for n in seen if n in created]
    print(f"\n## burst: {jobs} FineTuneJobs created at once (16 client threads)")
    print(f"{len(seen)}/{jobs} Jobs appeared within {total:.1f} s")
    if latencies:
        print(f"per-object latency (created -> its Job exists): p50 {statistics.median(latencies):.2f} s, "
              f"p99 {percentile(latencies, 99):.2f} s, max {max(latencies):.2f} s  (goal p99 < 2 s)")  # fmt: skip
    print(f"operator peak RSS {sampler.peak / 2**20:.0f} MiB (goal < 200 MB), CPU {cpu:.1f} s")
    print(f"operator API requests: {len(events)} = {len(events) / jobs:.1f} per job ({summarize(events)})")
    kube.delete("Namespace", None, ns)
    kube.wait_for(lambda: kube.get("Namespace", None, ns) is None, timeout, f"namespace {ns} deleted")


def steady(kube: Kube, op: OperatorProcess, resident: int, active: int, window: float) -> None:
    ns = kube.namespace("bench-steady")
    kube.claim(ns, "data")
    kube.claim(ns, "models")
    op.stop()
    finished = [spec(ns, i) for i in range(resident - active)]
    t0 = time.monotonic()
    create_all(kube, finished)

    def finish(obj: dict[str, Any]) -> None:
        kube.patch("FineTuneJob", ns, obj["metadata"]["name"], {"status": {
            "phase": "Succeeded", "observedGeneration": 1, "attempt": 1,
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "Completed", "message": "done",
                            "lastTransitionTime": "2026-12-01T00:00:00Z"}]}}, "status")  # fmt: skip

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(finish, finished))
    print(f"\n## steady: {resident} resident FineTuneJobs ({resident - active} finished, {active} active)")
    print(f"(created {len(finished)} finished jobs in {time.monotonic() - t0:.0f} s without an operator)")
    op.start()
    create_all(kube, [spec(ns, i) for i in range(resident - active, resident)])
    time.sleep(15)  # the initial listing, the active jobs' first attempts, one poll
    audit = Audit()
    sampler = Sampler(op.proc.pid)  # type: ignore[union-attr]
    cpu0 = sampler.cpu()
    time.sleep(window)
    events = audit.since_mark()
    cpu = sampler.cpu() - cpu0
    sampler.stop.set()
    others = [e for e in events if e.get("objectRef", {}).get("namespace") not in (ns, None)]
    assert not others, f"requests outside the benchmark namespace: {summarize(others)}"
    first_active = f"job-{resident - active:05d}"
    touched_finished = {name for e in events if (name := e.get("objectRef", {}).get("name", "")).startswith("job-")
                        and name.split("-a")[0] < first_active}  # fmt: skip
    rss = psutil.Process(op.proc.pid).memory_info().rss  # type: ignore[union-attr]
    print(
        f"operator requests over {window:.0f} s: {len(events)} = {len(events) / window:.1f}/s "
        f"({len(events) / window / max(active, 1):.2f}/s per active job; {summarize(events)})"
    )
    print(f"finished jobs touched in the window: {len(touched_finished)} (goal 0)")
    print(f"operator RSS {rss / 2**20:.0f} MiB, peak {sampler.peak / 2**20:.0f} MiB (goal < 300 MB), "
          f"CPU {cpu:.1f} s over {window:.0f} s")  # fmt: skip
    kube.delete("Namespace", None, ns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--resident", type=int, default=5000)
    parser.add_argument("--active", type=int, default=50)
    parser.add_argument("--window", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--skip-steady", action="store_true")
    args = parser.parse_args()
    controlplane.up()
    kube = Kube(controlplane.kubeconfig_path())
    release = Release(controlplane.kubeconfig_path(), values={"operator.pollSeconds": "10"})
    op = OperatorProcess(release, Path(tempfile.mkdtemp(prefix="operator-scale-")))
    op.start()
    try:
        burst(kube, op, args.jobs, args.timeout)
        if not args.skip_steady:
            steady(kube, op, args.resident, args.active, args.window)
    finally:
        op.stop()
        release.uninstall()
        print(f"\noperator log: {op.log}")


if __name__ == "__main__":
    main()
