"""Ray's own memory on a node, as the ray runtime starts it (launcher/ray_train.py: loopback, no dashboard).

    .venv/bin/python bench/ray_overhead.py

Starts a local Ray instance the way the launcher does, waits for it to settle, and prints the resident memory
(RSS) of each Ray process it started, then stops it. The head's processes (GCS) run only on a RayJob's head
pod; the raylet and its agents run on every worker pod, beside the training workers. Recorded in
docs/benchmarks.md; the planner's note on the ray runtime (plan/capacity.py, runtime_note) cites it.
"""

from __future__ import annotations

import os
import tempfile
import time

import psutil


def main() -> None:
    from modelforge.launcher.ray_train import LOCAL_RAY_ENV, LOG_ENV

    os.environ.update({**LOCAL_RAY_ENV, **LOG_ENV})
    import ray

    started = time.monotonic()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             _temp_dir=tempfile.mkdtemp(prefix="mf-ray-"), configure_logging=False)  # fmt: skip
    up = time.monotonic() - started
    time.sleep(5)
    me = psutil.Process()
    rows = []
    for child in me.children(recursive=True):
        try:
            line = " ".join(child.cmdline())
            rows.append((child.memory_info().rss / 2**20, line.split()[0].rsplit("/", 1)[-1], line))
        except psutil.Error:
            continue
    ray.shutdown()
    print(f"ray.init (local, loopback): {up:.1f} s")
    for rss, name, line in sorted(rows, reverse=True):
        print(f"{rss:8.0f} MiB  {name:<20} {line[:90]}")
    head_only = ("gcs_server", "dashboard/dashboard.py", "autoscaler/_private/monitor.py")
    head = sum(r for r, _, line in rows if any(h in line for h in head_only))
    idle = sum(r for r, name, _ in rows if name == "ray::IDLE")  # pre-started workers: become training workers
    per_node = sum(r for r, _, _ in rows) - head - idle
    print(f"total {sum(r for r, _, _ in rows):.0f} MiB: every node (raylet, agents, log monitor) {per_node:.0f} MiB; "
          f"head only (GCS, dashboard, autoscaler monitor) {head:.0f} MiB; idle worker processes {idle:.0f} MiB")


if __name__ == "__main__":
    main()
