"""500 FineTuneJobs created at once against the kmock emulator: time until every Job exists, operator RSS.

The operator runs as a separate process (`modelforge operator`, as in the chart) pointed at an in-process
kmock emulator, so its RSS is measured alone. Usage: python bench/operator_scale.py [--jobs 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil
from tests.operator.harness import emulated_cluster


def spec(index: int) -> dict:
    return {
        "apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": f"job-{index:04d}", "namespace": "bench"},
        "spec": {"model": {"source": "Qwen/Qwen3-8B"}, "datasets": [{"source": "org/data"}],
                 "hyperparameters": {"maxSteps": 10}, "output": {"claimName": "models"}},
    }  # fmt: skip


async def wait_until_live(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the operator did not become live at {url}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def main(jobs: int, timeout: float) -> None:
    async with emulated_cluster() as cluster:
        env = {**os.environ, "MODELFORGE_API_SERVER": cluster.url, "MODELFORGE_METRICS_PORT": "18081",
               "MODELFORGE_LIVENESS_PORT": "18080", "MODELFORGE_POLL_SECONDS": "30"}  # fmt: skip
        log = tempfile.NamedTemporaryFile("w+", suffix=".log")  # noqa: SIM115 - read back on failure
        operator = subprocess.Popen([sys.executable, "-m", "modelforge.cli", "operator"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        process = psutil.Process(operator.pid)
        peak_rss = 0
        try:
            try:
                await wait_until_live("http://127.0.0.1:18080/healthz", timeout=60)  # start-up is not measured
            except RuntimeError:
                log.seek(0)
                raise RuntimeError(f"the operator did not start; its log:\n{log.read()[-2000:]}") from None
            created: dict[str, float] = {}
            seen: dict[str, float] = {}
            start = time.monotonic()

            async def create(index: int) -> None:
                obj = spec(index)
                await cluster.create(obj)
                created[obj["metadata"]["name"]] = time.monotonic()

            await asyncio.gather(*(create(i) for i in range(jobs)))
            while len(seen) < jobs and time.monotonic() - start < timeout:
                now = time.monotonic()
                for resource, _, name in list(cluster.emulator.objects.keys()):  # keys only: no copies
                    if resource.plural == "jobs":
                        seen.setdefault(name.removesuffix("-a1"), now)
                peak_rss = max(peak_rss, process.memory_info().rss)
                await asyncio.sleep(0.1)
            total = time.monotonic() - start
            for _ in range(20):  # a little longer: timers and status patches settle
                peak_rss = max(peak_rss, process.memory_info().rss)
                await asyncio.sleep(0.1)
            with urllib.request.urlopen("http://127.0.0.1:18081/metrics", timeout=5) as response:
                reconcile = [line for line in response.read().decode().splitlines()
                             if line.startswith("modelforge_reconcile_seconds_")]  # fmt: skip
            operator_cpu = sum(process.cpu_times()[:2])
            emulator_cpu = sum(psutil.Process().cpu_times()[:2])
        finally:
            operator.terminate()
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
    latencies = [seen[name] - created[name] for name in seen if name in created]
    print(f"{jobs} FineTuneJobs created at once; {len(seen)} Jobs appeared within {total:.1f} s")
    if latencies:
        print(
            f"per-object latency (FineTuneJob created -> its Job exists): p50 {statistics.median(latencies):.2f} s, "
            f"p99 {percentile(latencies, 99):.2f} s, max {max(latencies):.2f} s  (target p99 < 2 s)"
        )
    print("reconcile durations (operator metrics): " + "; ".join(
        line.split("{")[0].split(" ")[0].removeprefix("modelforge_reconcile_seconds_") + "=" + line.rsplit(" ", 1)[1]
        for line in reconcile if "_count" in line or "_sum" in line))  # fmt: skip
    print(f"operator peak RSS: {peak_rss / 2**20:.0f} MiB  (target < 200 MB)")
    print(f"CPU seconds during the run: operator {operator_cpu:.1f}, emulator + this script {emulator_cpu:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.timeout))
