"""The bad-input corpus through every command: tracebacks, the slowest input and the largest memory.

    .venv/bin/python bench/spec_corpus.py

Each corpus file (tests/specs/bad, plus a directory, a missing path and a 1 MiB file made here) runs in a
process of its own through `modelforge validate`, `plan`, `render` and `run --dry-run` (in process, one after
the other); the process's peak RSS comes from wait4, each command's time from the driver. A valid spec is
measured the same way as the baseline (the interpreter and the imports). Recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("validate", "plan", "render", "run")
DRIVER = """
import contextlib, io, json, sys, time
from modelforge.cli import main
path, out = sys.argv[1], sys.argv[2]
result = {}
for command in sys.argv[3].split(","):
    argv = [command, path] + (["--dry-run", "--output", out] if command == "run" else [])
    text = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = main(argv)
    result[command] = [code, time.perf_counter() - start, "Traceback" in text.getvalue()
                       or "internal error" in text.getvalue()]
print(json.dumps(result))
"""


def measure(path: Path, tmp: Path) -> tuple[dict[str, list[object]], int]:
    """Each command's [exit code, seconds, traceback?] for one file, and the process's peak RSS in bytes."""
    with (tmp / "stderr").open("w+") as errors:
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(path), str(tmp / "out"), ",".join(COMMANDS)],
                                stdout=subprocess.PIPE, stderr=errors, text=True)  # fmt: skip
        stdout = proc.stdout.read() if proc.stdout else ""
        _, _, usage = os.wait4(proc.pid, 0)  # reaps it with its resource usage
        proc.returncode = 0
        if not stdout.strip():
            errors.seek(0)
            raise SystemExit(f"{path}: the driver failed: {errors.read()[-2000:]}")
    return json.loads(stdout.strip().splitlines()[-1]), usage.ru_maxrss * 1024


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "a-directory.yaml").mkdir()
        (tmp / "huge.yaml").write_text("# padding\n" * 110_000)
        files = sorted((ROOT / "tests/specs/bad").glob("*.yaml"))
        files += [tmp / "a-directory.yaml", tmp / "missing.yaml", tmp / "huge.yaml"]
        _, baseline = measure(ROOT / "tests/specs/valid/tiny-cpu.yaml", tmp)
        rows = []
        for path in files:
            result, rss = measure(path, tmp)
            rows.append((path.name, result, rss))
        tracebacks = sum(r[2] for _, result, _ in rows for r in result.values())
        bad_exit = sum(r[0] not in (1, 2) for _, result, _ in rows for r in result.values())
        slowest = max(((name, c, r[1]) for name, result, _ in rows for c, r in result.items()), key=lambda t: t[2])
        largest = max(rows, key=lambda t: t[2])
        print(f"files tried          {len(files)} x {len(COMMANDS)} commands = {len(files) * len(COMMANDS)} runs")
        print(f"tracebacks           {tracebacks}")
        print(f"exit codes not 1/2   {bad_exit}")
        print(f"slowest input        {slowest[0]} ({slowest[1]}): {slowest[2] * 1000:.0f} ms")
        print(f"largest memory       {largest[0]}: {largest[2] / 2**20:.0f} MiB peak RSS "
              f"(a valid spec, the baseline: {baseline / 2**20:.0f} MiB)")  # fmt: skip
        for name, result, rss in sorted(rows, key=lambda t: -max(r[1] for r in t[1].values()))[:5]:
            times = " ".join(f"{c} {r[1] * 1000:.0f} ms" for c, r in result.items())
            print(f"  {name:40s} {rss / 2**20:5.0f} MiB  {times}")


if __name__ == "__main__":
    main()
