"""Launcher overhead: `modelforge run` versus a bare `swift sft` with the identical argv, on the tiny model.

Usage: python bench/launcher_overhead.py [--repeats 3] [--steps 10]
Prints the wall time of each run and the median overhead. Target: <= 3 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from modelforge.launcher.distributed import local_world
from modelforge.launcher.local import load_finetunejob
from modelforge.launcher.run import RunOptions, prepare
from modelforge.testing import build_tiny_model, write_chat_dataset

OFFLINE = {"USE_HF": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MODELSCOPE_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    env = {**os.environ, **OFFLINE}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model")
        data = write_chat_dataset(root / "chat.jsonl", 64)
        spec_path = root / "job.yaml"
        spec_path.write_text(yaml.safe_dump({
            "apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "bench"},
            "spec": {"model": {"source": str(model), "modelType": "qwen3", "template": "qwen3"},
                     "datasets": [{"source": str(data)}],
                     "hyperparameters": {"maxSteps": args.steps, "batchSizePerDevice": 2, "maxLength": 256},
                     "checkpointing": {"saveSteps": args.steps, "resume": "never"}},
        }))  # fmt: skip
        parsed = load_finetunejob(spec_path)
        bare_out, run_out = root / "bare", root / "launcher"
        world, _ = local_world(1, 0)
        argv = prepare(parsed.spec, RunOptions("bench", bare_out, world, local=True, env=env)).argv
        bare_cmd = [sys.executable, "-m", "swift.cli.main", "sft", *argv]
        run_cmd = [sys.executable, "-m", "modelforge.cli", "run", str(spec_path), "--output", str(run_out)]
        bare, launcher = [], []
        for _ in range(args.repeats):  # interleaved, so drift affects both alike
            shutil.rmtree(bare_out, ignore_errors=True)
            shutil.rmtree(run_out, ignore_errors=True)
            bare.append(timed(bare_cmd, env))
            launcher.append(timed(run_cmd, env))
    print(f"tiny Qwen3, {args.steps} steps, CPU, {args.repeats} interleaved repeats")
    print(f"bare swift sft     : {' '.join(f'{t:.2f}' for t in bare)} s  (median {statistics.median(bare):.2f})")
    print(
        f"modelforge run     : {' '.join(f'{t:.2f}' for t in launcher)} s  (median {statistics.median(launcher):.2f})"
    )
    print(f"launcher overhead  : {statistics.median(launcher) - statistics.median(bare):+.2f} s (target <= 3 s)")


if __name__ == "__main__":
    main()
