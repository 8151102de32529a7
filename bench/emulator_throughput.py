"""How many API requests per second the kmock emulator serves here: the ceiling for bench/operator_scale.py.

Usage: PYTHONPATH=. python bench/emulator_throughput.py
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from tests.operator.harness import emulated_cluster

from modelforge.controller.kube import Kube, make_api_client


def measure(kube: Kube, workers: int, count: int, offset: int) -> float:
    def one(i: int) -> None:
        kube.create_or_adopt({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": f"c{i}", "namespace": "b"}, "data": {"a": "b"}})  # fmt: skip

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(offset, offset + count)))
    return time.perf_counter() - start


async def main() -> None:
    async with emulated_cluster() as cluster:
        kube = Kube(make_api_client(cluster.url))
        for workers, count, offset in ((1, 300, 0), (16, 300, 300)):
            elapsed = await asyncio.to_thread(measure, kube, workers, count, offset)
            print(
                f"{workers:2d} client thread(s): {count} creates in {elapsed:.2f} s = {count / elapsed:.0f} req/s, "
                f"{1000 * elapsed / count:.1f} ms each"
            )


if __name__ == "__main__":
    asyncio.run(main())
