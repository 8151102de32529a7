"""How many API requests per second the kmock emulator serves here: the ceiling for bench/operator_scale.py.

Usage: PYTHONPATH=. python bench/emulator_throughput.py
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from tests.operator.harness import emulated_cluster

from modelforge.controller.kube import Kube, make_api_client


async def main():
    async with emulated_cluster() as cluster:
        kube = Kube(make_api_client(cluster.url))

        def one(i):
            kube.create_or_adopt(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"c{i}", "namespace": "b"},
                    "data": {"a": "b"},
                }
            )

        for workers, n in ((1, 300), (16, 300)):
            t = time.perf_counter()
            with ThreadPoolExecutor(workers) as ex:
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: list(ex.map(one, range(n * workers, n * workers + n)))
                )
            dt = time.perf_counter() - t
            print(
                f"{workers} client threads: {n} creates in {dt:.2f} s = {n / dt:.0f} req/s, {1000 * dt / n:.1f} ms each"
            )


asyncio.run(main())
