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


def _subcommands():
    import argparse

    from modelforge.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_subcommand_help_has_a_description_and_every_argument_a_help(capsys):
    import pytest

    commands = _subcommands()
    assert len(commands) >= 15
    for name, parser in commands.items():
        assert parser.description and parser.description[0].isupper(), name
        for action in parser._actions:
            if action.dest != "help":
                assert action.help, f"modelforge {name}: {'/'.join(action.option_strings) or action.dest} has no help"
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert parser.description in " ".join(text.split()), name
        for action in parser._actions:  # a default worth saying is said
            if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
                assert f"(default: {action.default})" in " ".join(text.split()).replace("- ", "-"), (name, action.dest)


def test_plan_on_a_machine_without_a_gpu_says_what_run_will_do(tmp_path, monkeypatch, capsys):
    from modelforge.testing import build_tiny_model

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    build_tiny_model(tmp_path / "tiny-model")
    spec = tmp_path / "job.yaml"
    text = (ROOT / "examples/quickstart/finetunejob.yaml").read_text()
    spec.write_text(text.replace("./data/chat.jsonl", "/data/chat.jsonl"))
    assert main(["plan", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "0.00 B" not in out and "M parameters" in out
    assert "this machine has no GPU: `modelforge run` trains on the CPU" in out
    assert "1 process(es) on the CPU" in out and "float32" in out
    assert "not on a CPU: " in out and "fused AdamW" in out.split("not on a CPU: ")[1]
