"""Evaluate before you serve, with the REAL ms-swift on the CPU: `modelforge run` trains the tiny model on the
quickstart's kind of data, then answers held-out questions of that domain with `swift infer` as the base model
and as the tuned one, scores both and judges the gate; `modelforge eval` does the same for an existing
adapter; a broken evaluation file stops the job before training."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from modelforge.testing import write_chat_dataset, write_eval_dataset
from tests.integration.test_local_run import MODELFORGE, run, summary, write_spec

pytestmark = pytest.mark.integration
QUESTIONS = 12
TRAINING = {"maxSteps": 200, "learningRate": 5e-3, "batchSizePerDevice": 4, "maxLength": 256, "loggingSteps": 20}


def mean(results: Path, who: str, metric: str) -> float:
    values = [json.loads(line)[who]["scores"][metric] for line in results.read_text().splitlines()]
    return round(sum(values) / len(values), 2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    """One real training + evaluation, as `modelforge run` does it on the pod's code path."""
    tmp = tmp_path_factory.mktemp("evaluated")
    data = [{"source": str(write_chat_dataset(tmp / "chat.jsonl", 64)), "format": "messages"}]
    evaluation = {"datasets": [{"source": str(write_eval_dataset(tmp / "eval.jsonl", QUESTIONS))}], "maxNewTokens": 40,
                  "gate": {"metric": "rougeL", "minImprovement": 10}}  # fmt: skip
    spec = write_spec(tmp, tiny_model, datasets=data, lora={"rank": 32, "alpha": 64}, hyperparameters=TRAINING,
                      checkpointing={"saveSteps": 100}, evaluation=evaluation)  # fmt: skip
    out = tmp / "out"
    result = run(spec, out, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, out, result.stderr


def test_the_tuned_model_beats_the_base_model_on_its_domain_and_passes_the_gate(trained):
    _, out, stderr = trained
    evaluation = summary(out)["evaluation"]
    scores = {m["name"]: m for m in evaluation["metrics"]}
    assert (evaluation["rows"], evaluation["totalRows"], evaluation["partial"]) == (QUESTIONS, QUESTIONS, False)
    rouge = scores["rougeL"]
    # The direction, not a value: a random model answers noise, the tuned one the domain's phrases.
    assert rouge["tuned"] > rouge["base"] + 10, evaluation
    assert evaluation["passed"] is True and evaluation["summary"].endswith("pass"), evaluation
    assert rouge["delta"] == pytest.approx(rouge["tuned"] - rouge["base"], abs=0.011)
    # The recorded numbers are the means of the per-question scores in results.jsonl.
    results = out / "eval" / "results.jsonl"
    assert len(results.read_text().splitlines()) == QUESTIONS
    for metric in ("rougeL", "bleu", "exactMatch", "contains"):
        assert scores[metric]["tuned"] == pytest.approx(mean(results, "tuned", metric), abs=0.011), metric
        assert scores[metric]["base"] == pytest.approx(mean(results, "base", metric), abs=0.011), metric
    assert (out / "eval" / "scores.png").read_bytes()[:4] == b"\x89PNG"
    assert "| rougeL |" in (out / "eval" / "report.md").read_text()
    assert "PASS rougeL: +" in stderr and "evaluation: the base model answers 12 question(s)" in stderr
    assert evaluation["seconds"] > 0


def test_modelforge_eval_with_a_gate_above_reach_fails_and_says_its_numbers(trained):
    tmp, out, _ = trained
    adapter = out / "run" / "checkpoint-200"
    assert (adapter / "adapter_config.json").exists()
    report = tmp / "eval-cli"
    done = subprocess.run([*MODELFORGE, "eval", "--adapter", str(adapter), "--dataset", str(tmp / "eval.jsonl"),
                           "--samples", "4", "--max-new-tokens", "40", "--gate-metric", "exactMatch", "--min", "100",
                           "--output", str(report)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert "FAIL exactMatch: tuned " in done.stderr and "< minimum 100" in done.stderr, done.stderr[-2000:]
    saved = json.loads((report / "summary.json").read_text())
    assert saved["rows"] == 4 and saved["passed"] is False
    # The baseline defaulted to the adapter's base model (its args.json): both answered.
    first = json.loads((report / "results.jsonl").read_text().splitlines()[0])
    assert set(first) >= {"base", "tuned", "question", "reference", "where"}


def test_a_broken_evaluation_file_stops_the_job_before_training(tmp_path, tiny_model):
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"query": "Where is my order?", "response": "In transit."}\n{"query": "no answer"}\n')
    spec = write_spec(tmp_path, tiny_model, evaluation={"datasets": [{"source": str(bad)}]})
    result = run(spec, tmp_path / "out")
    assert result.returncode == 1, result.stderr
    outcome = summary(tmp_path / "out")
    assert outcome["reason"] == "DataError" and f"{bad}:2: " in outcome["message"], outcome
    assert not (tmp_path / "out" / "run" / "logging.jsonl").exists()  # no training step was spent


def test_the_budget_cuts_a_slow_evaluation_and_says_so(trained):
    """timeoutSeconds bounds the evaluation's wall time with the real engine: the random base model writes up to
    256 tokens per question, far more than its half of 20 s allows for 12 questions."""
    import time

    tmp, out, _ = trained
    report = tmp / "eval-budget"
    started = time.monotonic()
    done = subprocess.run([*MODELFORGE, "eval", "--adapter", str(out / "run" / "checkpoint-200"), "--dataset",
                           str(tmp / "eval.jsonl"), "--max-new-tokens", "256", "--timeout-seconds", "20",
                           "--output", str(report)], capture_output=True, text=True, timeout=600)  # fmt: skip
    elapsed = time.monotonic() - started
    saved = json.loads((report / "summary.json").read_text())
    assert saved["totalRows"] == QUESTIONS and saved["rows"] < QUESTIONS, saved
    # Cut: either some questions were scored (partial), or none could be in time; both are said.
    assert saved.get("partial") is True, saved
    if saved["rows"] == 0:
        assert done.returncode == 1 and "no question was answered within timeoutSeconds" in saved["error"], saved
    else:
        assert "(partial: timeoutSeconds cut the evaluation)" in done.stderr, done.stderr[-2000:]
    assert elapsed < 20 + 45, elapsed  # the budget, plus starting Python and stopping the engine
