"""Dataset pre-flight under hostile files: peak RSS and time per file, each in a process of its own.

    .venv/bin/python bench/dataset_preflight.py [--model PATH]

--model counts tokens with that model's tokenizer, as `modelforge run` and the pod do (a tiny one:
`modelforge tiny-model /tmp/tiny`); that is where a 30 MB row used to cost gigabytes.

Runs `modelforge validate-data FILE` (the command a user runs; the same check_file the launcher runs in the
pod) on files made here: one 30 MB line, a 30 MB line inside a JSON array, brackets nested 1,000,000 deep on
one line, a 5000-digit number, 200,000 good rows (the baseline for a big healthy file) and a 3-row file (the
baseline: the interpreter and the imports). Peak RSS comes from wait4 on the child. Recorded in
docs/benchmarks.md. To measure an older pre-flight: PYTHONPATH=<its operator/ folder> (the child inherits it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def files(folder: Path) -> dict[str, Path]:
    made = {
        "3 good rows (baseline)": ("small.jsonl", (json.dumps(ROW) + "\n").encode() * 3),
        "200,000 good rows (27 MB)": ("many.jsonl", (json.dumps(ROW) + "\n").encode() * 200_000),
        "one 30 MB line": ("long.jsonl", b'{"text": "' + b"x y " * 7_500_000 + b'"}\n{"text": "ok"}\n'),
        "a 30 MB row in a JSON array": ("long.json", b'[{"text": "' + b"x y " * 7_500_000 + b'"}]'),
        "nesting 1,000,000 deep": ("deep.jsonl", b'{"text": "a", "x": ' + b"[" * 1_000_000 + b"]" * 1_000_000 + b"}\n"),
        "a 5000-digit number (read)": ("digits.jsonl", b'{"text": "a", "n": ' + b"9" * 5000 + b"}\n"),
    }  # fmt: skip
    out = {}
    for name, (file_name, content) in made.items():
        (folder / file_name).write_bytes(content)
        out[name] = folder / file_name
    return out


def measure(path: Path, model: list[str]) -> tuple[float, float, int, str]:
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "modelforge.cli", "validate-data", str(path), *model],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    assert child.stdout is not None
    output = child.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    first = output.strip().splitlines()[0] if output.strip() else ""
    return (
        seconds,
        usage.ru_maxrss / 1024,
        os.waitstatus_to_exitcode(status),
        first.replace(str(path.parent) + "/", "")[:120],
    )


def main() -> None:
    model = sys.argv[1:3] if sys.argv[1:2] == ["--model"] else []
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'file':30} {'seconds':>8} {'peak RSS MiB':>13} {'exit':>5}  what it said")
        for name, path in files(Path(tmp)).items():
            seconds, rss, code, said = measure(path, model)
            print(f"{name:30} {seconds:8.2f} {rss:13.0f} {code:5}  {said}")


if __name__ == "__main__":
    main()
