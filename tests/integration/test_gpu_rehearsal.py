"""The GPU benchmark's CPU rehearsal: `bench/gpu/run.sh --rehearse` takes every step the GPU call takes.

Same entry point, same steps, the same carried-wheel install into a scratch target, from a Python that has
only the GPU machine's packages (bench/gpu/bare_env.py), on the tiny shape. A wheel missing from the
carried set, a typo or a wrong path fails here, never skips. The numbers say nothing about GPU speed.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.locks import locked as lock_of

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
STEPS = ["preflight", "build", "plan", "baseline", "auto-b4", "auto-b16", "qlora-r64-b1", "stock-b4"]
LAUNCHER_RUNS = STEPS[4:]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path, dict]:
    out = tmp_path_factory.mktemp("gpu-rehearsal")
    result = subprocess.run(["bash", str(ROOT / "bench/gpu/run.sh"), "--rehearse", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=720, check=False)  # fmt: skip
    report = out / "gpu-bench.json"
    assert report.exists(), f"no report; run.sh exited {result.returncode}:\n{result.stdout[-4000:]}{result.stderr}"
    return result, out, json.loads(report.read_text())


def test_every_step_ran_and_passed(rehearsal):
    result, _, report = rehearsal
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == STEPS
    failed = {name: f"{s['status']}: {s['reason']}" for name, s in steps.items() if s["status"] != "ok"}
    assert not failed, f"{failed}\n{result.stdout[-4000:]}"
    assert result.returncode == 0, result.stdout[-4000:]
    assert report["mode"].startswith("rehearse") and report["device"] == "cpu"


def test_every_row_has_positive_measurements(rehearsal):
    _, _, report = rehearsal
    rows = {r["run"]: r for r in report["rows"]}
    assert list(rows) == ["baseline", *LAUNCHER_RUNS]
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row["status"])
        for key in ("tokens_per_s", "mfu", "s_per_step", "tokens_per_step", "peak_gib"):
            assert row[key] > 0, (name, key, row.get(key))
        assert row["steps_timed"] >= 2, (name, row["steps_timed"])
        assert row["s_per_step_min"] <= row["s_per_step"] <= row["s_per_step_max"], (name, row)
    for name in LAUNCHER_RUNS:
        row = rows[name]
        assert row["planner_gib"] > 0, (name, row)
        assert isinstance(row["planner_error_pct"], float), (name, row)
        assert row["vs_baseline"] > 0, (name, row)


def test_the_report_files(rehearsal):
    _, out, report = rehearsal
    markdown = (out / "gpu-bench.md").read_text()
    assert "| run | tokens/s | vs baseline | MFU |" in markdown
    for row in report["rows"]:
        assert f"| {row['title']} |" in markdown
    assert "performance: auto against the transformers+peft baseline" in markdown
    for name in LAUNCHER_RUNS:  # `modelforge plan` ran on every launcher spec
        assert f"FineTuneJob {name}\n" in report["plan_cli"]
    assert "run.sh: finished in" in (out / "gpu-bench.log").read_text()
    with tarfile.open(out / "gpu-bench-logs.tar.gz") as tar:
        logs = set(tar.getnames())
    assert {f"logs/{name}.log" for name in STEPS} <= logs
    assert {f"logs/{name}.train.log" for name in LAUNCHER_RUNS} <= logs


def test_the_gpu_path_was_imported_from_the_carried_wheels(rehearsal):
    _, _, report = rehearsal
    machine = report["machine"]
    versions = machine["versions"]
    locked = lock_of("cuda")  # the carried wheels have the lock's versions, the venv's and the images'
    for name in ("ms-swift", "peft", "liger-kernel", "bitsandbytes", "deepspeed", "pydantic", "trl"):
        assert versions[name] == locked[name], (name, versions[name], locked[name])
    assert any(lib.startswith("libbitsandbytes_cuda13") for lib in machine["bitsandbytes_libraries"])


def test_the_rehearsal_python_hides_what_the_gpu_machine_lacks(rehearsal):
    """The proof rests on this: without the carried wheels, the rehearsal's Python cannot import them."""
    bare = ROOT / "bench-gpu-work" / "bare"
    hidden = json.loads((bare / "bare-env.json").read_text())["hidden"]
    assert {"ms-swift", "pydantic", "deepspeed", "trl", "datasets", "modelforge"} <= set(hidden)
    for module in ("swift", "pydantic", "cel", "liger_kernel", "bitsandbytes"):
        found = subprocess.run([str(bare / "bin/python"), "-c", f"import {module}"], capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin"}, check=False)  # fmt: skip
        assert found.returncode != 0 and "ModuleNotFoundError" in found.stderr, (module, found.stderr[-300:])
    torch = subprocess.run([str(bare / "bin/python"), "-c", "import torch, transformers, peft"], capture_output=True,
                           text=True, env={"PATH": "/usr/bin:/bin"}, check=False)  # fmt: skip
    assert torch.returncode == 0, torch.stderr[-500:]
