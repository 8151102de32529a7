"""An unexpected exception inside the pod's pre-flight still ends as a classified outcome, written to the
termination-message file, with the documented exit code (Unknown: 75, retryable) and no traceback.

The fault is real: the model's tokenizer.json is corrupt, so the tokenizers library raises its own
exception while pre-flight builds the token counter. `modelforge launch` (the training pod's entrypoint)
runs as a process, as in the pod.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from modelforge.launcher.outcome import EXIT_RETRYABLE


def test_a_crash_in_preflight_writes_a_classified_termination_message(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "tokenizer.json").write_text('{"model": {"type": "NoSuchModel"}}')  # the tokenizers lib raises
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"query": "q", "response": "r"}) + "\n")
    spec = {"model": {"source": str(model), "modelType": "qwen3", "template": "qwen3"},
            "datasets": [{"source": str(data)}], "hyperparameters": {"maxSteps": 1}}  # fmt: skip
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"name": "job", "spec": spec}))
    termination = tmp_path / "termination-log"
    env = {**os.environ, "MODELFORGE_OUTPUT_ROOT": str(tmp_path / "out"), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "modelforge.cli", "launch", "--config", str(config), "--termination-log",
         str(termination)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == EXIT_RETRYABLE, done.stdout[-2000:] + done.stderr[-2000:]
    outcome = json.loads(termination.read_text())
    assert outcome["outcome"] == "Failed" and outcome["reason"] == "Unknown" and outcome["retryable"]
    assert outcome["message"].startswith("internal error before training (pre-flight)"), outcome
    assert "(at " in outcome["message"] and "\n" not in outcome["message"]
    assert "Traceback" not in done.stdout + done.stderr + termination.read_text()
