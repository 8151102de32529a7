"""The real vLLM server on the CPU, as a ModelServe renders it, with its serve agent: startup, request
latency per model, resident memory, and how long a live adapter change takes.

Usage: .venv/bin/python bench/vllm_cpu.py [--requests 20] [--tokens 16]
Needs the vLLM venv (scripts/get-vllm.sh). Prints one table; docs/benchmarks.md records it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.vllm_stack import Stack, serve_spec, train_adapters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="chat requests per model")
    parser.add_argument("--tokens", type=int, default=16, help="max_tokens per request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, early, late = train_adapters(root)
        stack = Stack(serve_spec(model, {"early": early, "late": late}), root)
        try:
            startup = stack.start_engine()
            began = time.monotonic()
            stack.start_agent()
            stack.wait_report(lambda r: [a["state"] for a in r["adapters"]] == ["Loaded", "Loaded"])
            first_load = time.monotonic() - began
            rows = []
            for name in ("tiny", "early", "late"):
                latencies = []
                for _ in range(args.requests):
                    started = time.perf_counter()
                    question = [{"role": "user", "content": "How do I reset my password?"}]
                    body = {"model": name, "max_tokens": args.tokens, "temperature": 0, "messages": question}
                    stack.request("/v1/chat/completions", body)
                    latencies.append(time.perf_counter() - started)
                latencies.sort()
                rows.append((name, statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))]))
            rss = stack.engine_rss_mib()
            began = time.monotonic()
            stack.desired(serve_spec(model, {"late": late}))  # unload `early` live
            stack.wait_report(lambda r: [a["name"] for a in r["adapters"]] == ["late"] and "early" not in r["models"])
            unload = time.monotonic() - began
            began = time.monotonic()
            stack.desired(serve_spec(model, {"early": early, "late": late}))  # and load it again
            stack.wait_report(lambda r: [a["state"] for a in r["adapters"]] == ["Loaded", "Loaded"])
            load = time.monotonic() - began
        finally:
            stack.stop()
    print(f"vLLM (vllm-cpu 0.32) on the CPU, tiny Qwen3 (hidden 128) + 2 LoRA adapters, {args.requests} requests "
          f"x {args.tokens} tokens per model")  # fmt: skip
    print(f"  startup to first answer      {startup:6.1f} s")
    print(f"  agent: both adapters loaded  {first_load:6.1f} s after the agent started")
    for name, p50, p95 in rows:
        print(f"  latency {name:<6} p50 {p50 * 1000:6.0f} ms  p95 {p95 * 1000:6.0f} ms")
    print(f"  engine RSS (process group)   {rss:6.0f} MiB")
    print(f"  live unload (ConfigMap -> gone from /v1/models)  {unload:4.1f} s (agent interval 1 s)")
    print(f"  live load   (ConfigMap -> Loaded)                {load:4.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
