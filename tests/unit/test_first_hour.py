"""First-hour polish a newcomer tripped over (issue 16, point 5): each checked where it is seen."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from modelforge.cli import main
from modelforge.client import visible

ROOT = Path(__file__).resolve().parents[2]


def test_make_help_lists_every_documented_target_including_e2e():
    listed = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("e2e", "vllm", "cluster-down", "test", "demo"):
        assert f"make {target} " in listed, listed


def test_crds_check_says_up_to_date(capsys):
    assert main(["crds", "--check", "--root", str(ROOT)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_quickstart_readme_names_files_that_exist():
    text = (ROOT / "examples" / "quickstart" / "README.md").read_text()
    assert "--questions examples/quickstart/questions.txt" in text
    assert (ROOT / "examples" / "quickstart" / "questions.txt").read_text().strip()


def test_an_empty_think_block_is_hidden_unless_asked():
    assert visible("<think>\n\n</think>\n\nOpen Settings.") == "Open Settings."
    assert visible("<think>\n\n</think>\n\nOpen Settings.", show_thinking=True).startswith("<think>")
    assert visible("<think>plan</think>answer") == "<think>plan</think>answer"  # real thinking is kept


def test_the_chart_sets_the_planners_gpu():
    values = yaml.safe_load((ROOT / "helm" / "modelforge" / "values.yaml").read_text())
    assert values["operator"]["gpuMemory"] == "80Gi" and values["operator"]["gpuTflops"] == 800
    template = (ROOT / "helm" / "modelforge" / "templates" / "deployment.yaml").read_text()
    assert "MODELFORGE_GPU_MEMORY" in template and "MODELFORGE_GPU_TFLOPS" in template
