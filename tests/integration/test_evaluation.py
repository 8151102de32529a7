"""Evaluate before you serve, with the REAL ms-swift on the CPU: the session's one training (`modelforge run`,
tests/conftest.py tiny_adapters) answers held-out questions of its domain with `swift infer` as the base model
and as the tuned one after training, scores both and judges the gate; `modelforge eval` does the same for its
adapter, within a budget; a broken evaluation file stops a job before training."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_local_run import MODELFORGE, run, summary, write_spec
from tests.integration.vllm_stack import EVAL_QUESTIONS as QUESTIONS

pytestmark = pytest.mark.integration


def mean(results: Path, who: str, metric: str) -> float:
    values = [json.loads(line)[who]["scores"][metric] for line in results.read_text().splitlines()]
    return round(sum(values) / len(values), 2)


@pytest.fixture(scope="module")
def trained(tiny_adapters):
    """The session's one real training (tests/conftest.py tiny_adapters: `modelforge run`, the pod's code path),
    whose spec evaluates it after training; (its directory, its output, its adapter at step 40)."""
    _, _, late = tiny_adapters
    out = late.parent.parent
    return out.parent, out, late


def test_the_tuned_model_beats_the_base_model_on_its_domain_and_passes_the_gate(trained):
    _, out, _ = trained
    evaluation = summary(out)["evaluation"]
    scores = {m["name"]: m for m in evaluation["metrics"]}
    assert (evaluation["rows"], evaluation["totalRows"], evaluation["partial"]) == (QUESTIONS, QUESTIONS, False)
    rouge = scores["rougeL"]
    # The direction, not a value: a random model answers noise, the tuned one the domain's phrases.
    assert rouge["tuned"] > rouge["base"] + 10, evaluation
    assert evaluation["passed"] is True and evaluation["summary"].endswith("pass"), evaluation
    assert evaluation["verdict"].startswith("rougeL: +") and "minImprovement +10" in evaluation["verdict"]
    assert rouge["delta"] == pytest.approx(rouge["tuned"] - rouge["base"], abs=0.011)
    # The recorded numbers are the means of the per-question scores in results.jsonl.
    results = out / "eval" / "results.jsonl"
    assert len(results.read_text().splitlines()) == QUESTIONS
    for metric in ("rougeL", "bleu", "exactMatch", "contains"):
        assert scores[metric]["tuned"] == pytest.approx(mean(results, "tuned", metric), abs=0.011), metric
        assert scores[metric]["base"] == pytest.approx(mean(results, "base", metric), abs=0.011), metric
    assert (out / "eval" / "scores.png").read_bytes()[:4] == b"\x89PNG"
    assert "| rougeL |" in (out / "eval" / "report.md").read_text()
    assert evaluation["seconds"] > 0 and evaluation["results"].endswith("eval/results.jsonl")


def test_modelforge_eval_with_a_gate_above_reach_fails_and_says_its_numbers(trained, tmp_path):
    tmp, _, adapter = trained
    assert (adapter / "adapter_config.json").exists()
    report = tmp_path / "eval-cli"
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


def test_the_budget_cuts_a_slow_evaluation_and_says_so(trained, tmp_path):
    """timeoutSeconds bounds the evaluation's wall time with the real engine: the random base model writes up to
    256 tokens per question, far more than its half of 20 s allows for 12 questions."""
    import time

    tmp, _, adapter = trained
    report = tmp_path / "eval-budget"
    started = time.monotonic()
    done = subprocess.run([*MODELFORGE, "eval", "--adapter", str(adapter), "--dataset",
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
