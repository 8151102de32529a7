"""A model's own code runs only with spec.model.trustRemoteCode, through the real ms-swift loader.

The tiny Qwen3 is given a config.json `auto_map` to a configuration module that leaves a marker when
imported (what a hostile modeling_*.py would do first). ms-swift 4.6 loads with trust_remote_code=True
by default; under ModelForge's policy (launcher/remote_code.py) `swift infer` refuses the model and the
module never runs; with MODELFORGE_TRUST_REMOTE_CODE=1 (what the spec field renders) it runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelforge.launcher.remote_code import remote_code_problem

pytestmark = pytest.mark.integration

CONFIG_MODULE = """
import os, pathlib
pathlib.Path(os.environ["MARKER"]).write_text("the model's own code ran")
from transformers import Qwen3Config


class ShippedConfig(Qwen3Config):
    model_type = "shipped-qwen3"
"""
MODELING_MODULE = """
from transformers import Qwen3ForCausalLM

from .configuration_shipped import ShippedConfig


class ShippedForCausalLM(Qwen3ForCausalLM):
    config_class = ShippedConfig
"""


def with_code(tiny_model: Path, model: Path, model_type: str) -> Path:
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "configuration_shipped.ShippedConfig",
                          "AutoModelForCausalLM": "modeling_shipped.ShippedForCausalLM"}  # fmt: skip
    (model / "config.json").write_text(json.dumps(config))
    (model / "configuration_shipped.py").write_text(CONFIG_MODULE)
    (model / "modeling_shipped.py").write_text(MODELING_MODULE)
    return model


def _infer(model: Path, marker: Path, trust: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    env = {**os.environ, "MARKER": str(marker), "MODELFORGE_TRUST_REMOTE_CODE": trust, "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "modelforge.launcher.remote_code", "infer", "--model", str(model),
            "--model_type", "qwen3", "--template", "qwen3", "--infer_backend", "pt", "--val_dataset",
            str(questions), "--result_path", str(tmp_path / f"out-{model.name}-{trust}.jsonl"),
            "--max_new_tokens", "2", "--stream", "false"]  # fmt: skip
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def test_a_models_own_code_runs_only_when_the_spec_trusts_it(tiny_model: Path, tmp_path: Path):
    marker = tmp_path / "ran"
    # An architecture transformers does not know: refused (its code unrun) unless trusted.
    custom = with_code(tiny_model, tmp_path / "custom", "shipped-qwen3")
    refused = _infer(custom, marker, "0", tmp_path)
    assert refused.returncode != 0 and not marker.exists(), refused.stderr[-2000:]
    assert "trust_remote_code" in refused.stderr, refused.stderr[-2000:]  # transformers says what it needs
    # The launcher's pre-flight says it first, naming the field to set.
    problem = remote_code_problem(custom, trust=False)
    assert problem and problem.startswith("spec.model.trustRemoteCode:"), problem
    assert "configuration_shipped, modeling_shipped" in problem
    assert remote_code_problem(custom, trust=True) is None
    trusted = _infer(custom, marker, "1", tmp_path)
    assert marker.read_text() == "the model's own code ran", trusted.stderr[-2000:]
    assert trusted.returncode == 0, trusted.stderr[-2000:]

    # An architecture transformers has (hub models often keep an old auto_map): it loads with transformers'
    # classes, the shipped code never runs (ms-swift alone would have run it), and pre-flight lets it through.
    marker.unlink()
    native = with_code(tiny_model, tmp_path / "native", "qwen3")
    assert remote_code_problem(native, trust=False) is None
    loaded = _infer(native, marker, "0", tmp_path)
    assert loaded.returncode == 0 and not marker.exists(), loaded.stderr[-2000:]
