"""Evaluate before you serve: scoring, the gate's verdict, the operator's promotion and what serving waits for.

The engines that answer (swift infer, an endpoint) are exercised for real in tests/integration/test_evaluation.py;
here the answers are given, and everything ModelForge computes from them is checked.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from modelforge.api.conditions import Reason
from modelforge.api.evaluation import EvalGate, EvaluationSpec, EvaluationStatus, Metric, MetricScore
from modelforge.api.finetunejob import FineTuneJobStatus, ServeTemplate
from modelforge.launcher.evaluate import EvalFileError, EvalRow, evaluate, load_eval_rows, read_eval_file, score
from modelforge.launcher.outcome import Outcome
from modelforge.plan.capacity import PlanSettings
from modelforge.plan.evaluation import judge, measured_status, promotion
from modelforge.plan.lifecycle import Observed, decide
from modelforge.plan.serving import resolve_from_job
from modelforge.render.desired import desired_finetunejob
from modelforge.render.settings import RenderSettings
from modelforge.render.training import Owner
from tests.unit.test_lifecycle import JOB, RUNNING_STATUS, conditions, spec, terminated

NOW = datetime(2026, 12, 7, 12, 0, 0)
EVAL = {"datasets": [{"source": "pvc://data/eval.jsonl"}]}


def evaluation(**fields) -> EvaluationSpec:
    return EvaluationSpec.model_validate({**EVAL, **fields})


def measured(base: float | None, tuned: float | None, metric: str = "rougeL", **fields) -> EvaluationStatus:
    return EvaluationStatus.model_validate(
        {
            "rows": 10,
            "totalRows": 10,
            "partial": False,
            "metrics": [{"name": metric, "base": base, "tuned": tuned}],
            **fields,
        }
    )


@pytest.mark.parametrize(
    ("metric", "answer", "reference", "expected"),
    [
        (Metric.EXACT_MATCH, "  Paris. ", "paris", 100.0),
        (Metric.EXACT_MATCH, "Paris, France", "Paris", 0.0),
        (Metric.CONTAINS, "It is Paris, France.", "paris", 100.0),
        (Metric.CONTAINS, "Parisian", "paris", 0.0),  # words, not substrings
        (Metric.ROUGE_L, "the cat sat on the mat", "the cat sat on the mat", 100.0),
        (Metric.ROUGE_L, "", "the cat", 0.0),
        (Metric.BLEU, "the cat sat on the mat", "the cat sat on the mat", 100.0),
        (Metric.BLEU, "dog", "the cat sat on the mat", None),  # low, not zero: smoothing
        (Metric.CHRF, "kubernetes operator", "kubernetes operator", 100.0),
        (Metric.ROUGE_L, "模型微调", "模型微调", 100.0),  # each CJK character a word
    ],
)
def test_scores_are_0_to_100_from_the_libraries(metric, answer, reference, expected):
    value = score(metric, answer, reference)
    assert 0.0 <= value <= 100.0
    if expected is None:
        assert value < 20
    else:
        assert value == pytest.approx(expected, abs=0.01)
    partial = score(Metric.ROUGE_L, "the cat sat", "the cat sat on the mat")
    assert 0 < partial < 100


def test_an_eval_file_is_read_with_every_problem_at_file_line(tmp_path):
    path = tmp_path / "eval.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]},
        {"query": "Capital of France?", "response": "Paris", "images": ["a.png"]},
        {"messages": [{"role": "user", "content": "no answer"}]},
        {"text": "just text"},
        "not an object",
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    good, problems = read_eval_file(path)
    assert [r.reference for r in good] == ["4", "Paris"]
    assert good[1].media == {"images": ["a.png"]} and good[1].question == "Capital of France?"
    assert [p.split(": ", 1)[0] for p in problems] == [f"{path}:{n}" for n in (3, 4, 5, 6)]
    assert "the last turn must be the assistant's reference answer" in problems[0]
    with pytest.raises(EvalFileError) as raised:
        load_eval_rows([(path, None)])
    assert str(raised.value).startswith(f"{path}:3: ") and "(and 3 more)" in str(raised.value)
    assert [r.reference for r in load_eval_rows([(path, 2)])] == ["4", "Paris"]  # samples: the first rows only
    assert read_eval_file(tmp_path / "missing.jsonl")[1] == [f"{tmp_path / 'missing.jsonl'}: file not found"]


def rows(n: int) -> list[EvalRow]:
    return [
        EvalRow(f"eval.jsonl:{i + 1}", [{"role": "user", "content": f"q{i}"}], f"answer number {i}") for i in range(n)
    ]


def test_evaluate_compares_base_and_tuned_writes_the_files_and_judges(tmp_path):
    spec_ = evaluation(gate={"metric": "rougeL", "minimum": 50, "minImprovement": 10})

    def tuned(asked, deadline):
        return [r.reference for r in asked], False

    def base(asked, deadline):
        return ["I do not know" for _ in asked], False

    result = evaluate(spec_, rows(4), tuned, base, tmp_path / "eval")
    status = result.status
    by_name = {m.name: m for m in status.metrics}
    assert by_name[Metric.ROUGE_L].tuned == 100.0 and by_name[Metric.ROUGE_L].base == 0.0
    assert by_name[Metric.ROUGE_L].delta == 100.0
    assert (status.rows, status.total_rows, status.partial, status.passed) == (4, 4, False, True)
    assert status.summary == "rougeL 100 (+100) pass"
    lines = (tmp_path / "eval" / "results.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["tuned"]["answer"] == "answer number 0" and first["base"]["scores"]["rougeL"] == 0.0
    assert len(lines) == 4
    assert "| rougeL | 0.0 | 100.0 | +100.0 |" in (tmp_path / "eval" / "report.md").read_text()
    assert (tmp_path / "eval" / "scores.png").read_bytes()[:4] == b"\x89PNG"
    assert status.chart and status.report and status.results


def test_a_budget_cut_compares_the_rows_both_models_answered(tmp_path):
    def base(asked, deadline):
        return ["x"] * 3, True  # ran out of its half after 3 rows

    def tuned(asked, deadline):
        assert len(asked) == 3  # only what the base model answered
        return [r.reference for r in asked[:2]], True

    status = evaluate(evaluation(), rows(5), tuned, base, tmp_path).status
    assert (status.rows, status.total_rows, status.partial) == (2, 5, True)
    assert status.summary.endswith("partial")


def test_an_engine_that_fails_gives_an_error_not_an_exception(tmp_path):
    from modelforge.launcher.infer import InferenceError

    def broken(asked, deadline):
        raise InferenceError("swift infer failed (exit 1): torch.OutOfMemoryError: CUDA out of memory\n(its log)")

    status = evaluate(evaluation(gate={"metric": "rougeL", "minimum": 1}), rows(2), broken, None, tmp_path).status
    assert status.error == "the tuned model: swift infer failed (exit 1): torch.OutOfMemoryError: CUDA out of memory"
    assert status.metrics is None and status.passed is None and status.partial is False
    promoted, reason, message = promotion(evaluation(gate={"metric": "rougeL", "minimum": 1}), status)
    assert (promoted, reason) == (False, Reason.EVALUATION_FAILED) and "swift infer failed" in message


@pytest.mark.parametrize(
    ("gate", "base", "tuned", "passed", "said"),
    [
        ({"minimum": 40}, 10, 41.2, True, "tuned 41.2 >= minimum 40"),
        ({"minimum": 40}, 10, 39.99, False, "tuned 39.99 < minimum 40"),
        ({"minImprovement": 5}, 30, 36, True, "+6 over the base model (30) >= minImprovement +5"),
        ({"minImprovement": 0}, 30, 29, False, "-1 over the base model (30) < minImprovement +0"),
        ({"minImprovement": 0}, None, 29, None, "no base-model score"),
        ({"minimum": 10, "minImprovement": 50}, 30, 36, False, "< minImprovement +50"),
    ],
)
def test_the_gate_says_its_numbers(gate, base, tuned, passed, said):
    judged = judge(evaluation(gate={"metric": "rougeL", **gate}), measured(base, tuned))
    assert judged.passed is passed
    assert said in judged.verdict
    decided = promotion(evaluation(gate={"metric": "rougeL", **gate}), judged)
    assert decided[0] is bool(passed)
    expected = {
        True: Reason.EVALUATION_PASSED,
        False: Reason.EVALUATION_BELOW_THRESHOLD,
        None: Reason.EVALUATION_FAILED,
    }
    assert decided[1] == expected[passed]


def test_without_a_gate_the_scores_are_recorded_and_the_output_promoted():
    judged = judge(evaluation(), measured(20, 30))
    assert judged.passed is None and judged.summary == "rougeL 30 (+10)"
    assert promotion(evaluation(), judged)[:2] == (True, Reason.EVALUATION_RECORDED)
    assert promotion(None, judged) is None  # no spec.evaluation: no condition at all


@pytest.mark.parametrize(
    "reported",
    [
        {"rows": "10", "metrics": [{"name": "rougeL", "tuned": 50, "base": 10}], "passed": True, "judge": "me"},
        {"metrics": [{"name": "newMetric", "tuned": 1}, {"name": "rougeL", "tuned": 150, "base": 5}]},
        {"metrics": "rougeL 50", "verdict": {"x": 1}, "seconds": float("nan")},
        {"garbage": "x" * 4096},
        ["not", "a", "dict"],
    ],
    ids=["passed-claimed", "unknown-metric-out-of-range", "wrong-types", "garbage", "not-a-dict"],
)
def test_a_launchers_report_keeps_only_what_fits_and_cannot_claim_a_pass(reported):
    kept = measured_status(reported)
    if kept is not None:
        FineTuneJobStatus.model_validate({"evaluation": kept.to_wire()})
        assert kept.passed is None and kept.verdict is None  # the operator judges; a launcher cannot say "passed"
    gate = evaluation(gate={"metric": "rougeL", "minimum": 90})
    judged = judge(gate, kept) if kept is not None else None
    assert promotion(gate, judged)[0] is False


def finished_job(evaluation_spec: dict | None, reported: dict | None, serve: bool = True):
    s = spec()
    if evaluation_spec is not None:
        s = s.model_copy(update={"evaluation": EvaluationSpec.model_validate(evaluation_spec)})
    if serve:
        s = s.model_copy(update={"serve": ServeTemplate()})
    adapter = {"adapter": "pvc://models/tiny/run/checkpoint-40"}
    outcome = Outcome("Succeeded", "Completed", "trained", exit_code=0, outputs=adapter, evaluation=reported or {})
    done = {**JOB, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    pods = (terminated("Succeeded", json.loads(outcome.to_json()), "Completed", 0),)
    return s, Observed(done, pods)


def test_a_gate_that_fails_keeps_the_job_succeeded_and_creates_no_serve():
    reported = measured(30, 31).to_wire()
    s, observed = finished_job({**EVAL, "gate": {"metric": "rougeL", "minImprovement": 5}}, reported)
    owner = Owner("FineTuneJob", "tiny", "default", "uid-1")
    desired = desired_finetunejob(owner, s, [], RUNNING_STATUS, observed, NOW, 1, PlanSettings(), RenderSettings())
    status = desired.status.to_wire()
    assert status["phase"] == "Succeeded"
    assert conditions(status)["Promoted"] == ("False", "EvaluationBelowThreshold")
    assert "+1 over the base model (30) < minImprovement +5" in next(
        c["message"] for c in status["conditions"] if c["type"] == "Promoted"
    )
    assert status["evaluation"]["summary"] == "rougeL 31 (+1) fail"
    assert not [c for c in desired.children if c["kind"] == "ModelServe"] and "serveName" not in status
    assert ("Warning", "EvaluationBelowThreshold") in [e[:2] for e in desired.decision.events]
    # A ModelServe naming the job waits, and says why.
    model, why = resolve_from_job("tiny", {"spec": s.to_wire(), "status": status})
    assert model is None and "FineTuneJob tiny is not promoted: rougeL: +1 over the base model" in why


def test_a_gate_that_passes_promotes_and_serves():
    s, observed = finished_job({**EVAL, "gate": {"metric": "rougeL", "minImprovement": 5}}, measured(30, 41).to_wire())
    owner = Owner("FineTuneJob", "tiny", "default", "uid-1")
    desired = desired_finetunejob(owner, s, [], RUNNING_STATUS, observed, NOW, 1, PlanSettings(), RenderSettings())
    assert conditions(desired.status)["Promoted"] == ("True", "EvaluationPassed")
    assert [c["kind"] for c in desired.children] == ["ModelServe"]
    model, _ = resolve_from_job("tiny", {"spec": s.to_wire(), "status": desired.status.to_wire()})
    assert model is not None


def test_a_job_with_a_gate_whose_launcher_reported_nothing_is_not_promoted():
    s, observed = finished_job({**EVAL, "gate": {"metric": "rougeL", "minimum": 1}}, None)
    d = decide(s, [], RUNNING_STATUS, observed, NOW)
    assert conditions(d.status)["Promoted"] == ("False", "EvaluationFailed")
    assert "evaluation" not in d.wire


def test_a_job_without_evaluation_has_no_promoted_condition():
    s, observed = finished_job(None, None, serve=False)
    d = decide(s, [], RUNNING_STATUS, observed, NOW)
    assert "Promoted" not in conditions(d.status) and d.wire["phase"] == "Succeeded"


def test_an_evaluation_fits_the_termination_message():
    """What launcher/run.py sends (the measured keys only), at its largest, leaves room for the rest."""
    from modelforge.plan.evaluation import MEASURED_KEYS

    metrics = [MetricScore(name=m, base=12.3456, tuned=45.678) for m in Metric]
    status = EvaluationStatus(rows=1000, total_rows=1000, partial=False, metrics=metrics, eval_loss=1.23,
                              error="e" * 1024, seconds=1234.5, results="pvc://" + "r" * 300,
                              report="pvc://" + "r" * 300, chart="pvc://" + "c" * 300, verdict="v" * 1024,
                              summary="s" * 64, passed=True)  # fmt: skip
    sent = status.to_wire()
    outputs = {"adapter": "pvc://" + "a" * 300, "outputDir": "pvc://" + "o" * 300, "mergedModel": "pvc://" + "g" * 300}
    outcome = Outcome("Succeeded", "Completed", "m" * 1000, outputs=outputs, decisive_lines=["x" * 200] * 20,
                      evaluation=sent, last_checkpoint="pvc://" + "a" * 300)  # fmt: skip
    text = outcome.to_json()
    assert len(text.encode()) <= 4096
    kept = json.loads(text)["evaluation"]
    assert set(kept) <= set(MEASURED_KEYS) and "verdict" not in kept and "passed" not in kept
    assert kept["metrics"] == sent["metrics"] and kept["rows"] == 1000  # the scores survive; the error is cut first
    judged = judge(evaluation(gate={"metric": "rougeL", "minimum": 40}), measured_status(kept))
    assert judged.passed is True


def test_a_failing_base_model_leaves_the_tuned_model_scored(tmp_path):
    from modelforge.launcher.infer import InferenceError

    def base(asked, deadline):
        raise InferenceError("swift infer failed (exit 1): OSError: base weights missing\n...")

    spec_ = evaluation(gate={"metric": "rougeL", "minimum": 50})
    status = evaluate(spec_, rows(3), lambda a, d: ([r.reference for r in a], False), base, tmp_path).status
    assert status.rows == 3 and {m.name: m for m in status.metrics}[Metric.ROUGE_L].tuned == 100.0
    assert status.passed is True and "the base model: swift infer failed (exit 1): OSError" in status.error


def test_gate_fields_are_checked_by_the_api_model():
    with pytest.raises(ValueError):
        EvalGate.model_validate({"metric": "rougeL", "minimum": 101})


def test_modelforge_status_shows_the_table_and_why_nothing_is_served():
    from modelforge.status_view import describe

    reported = measured(30, 31).to_wire()
    s, observed = finished_job({**EVAL, "gate": {"metric": "rougeL", "minImprovement": 5}}, reported)
    d = decide(s, [], RUNNING_STATUS, observed, NOW)
    obj = {"kind": "FineTuneJob", "metadata": {"name": "tiny", "namespace": "ml"}, "spec": s.to_wire(),
           "status": d.wire}  # fmt: skip
    text = "\n".join(describe(obj))
    assert "  evaluation  metric            base     tuned     delta" in text
    assert "rougeL            30.0      31.0      +1.0" in text
    assert "FAIL rougeL: +1 over the base model (30) < minImprovement +5" in text
    assert "ModelServe tiny, not created: the evaluation did not promote the output (spec.serve)" in text
    assert "Promoted    False EvaluationBelowThreshold: not promoted: rougeL" in text


def test_the_plan_says_what_the_evaluation_adds():
    from modelforge.plan.capacity import plan
    from modelforge.plan.models import guess

    job = spec("qwen3-30b-a3b-full-5gpu").model_copy(update={"evaluation": evaluation(maxNewTokens=512)})
    note = next(n for n in plan(job, guess(job.model.source)[0]).notes if n.startswith("evaluation:"))
    assert "the base and the tuned model in turn" in note and "over the pod's 5 GPU(s)" in note
    assert "16-bit weights" in note and "26 s per question and model (512 new tokens" in note
    assert "at most 60 min in all (evaluation.timeoutSeconds)" in note
    qlora = spec("qwen3-8b-qlora-8gb").model_copy(update={"evaluation": evaluation(baseline=False)})
    note = next(n for n in plan(qlora, guess(qlora.model.source)[0]).notes if n.startswith("evaluation:"))
    assert "4-bit weights over the pod's 1 GPU(s)" in note and "loads the tuned model" in note
    assert "offloaded" not in note  # 4-bit weights of 8 B parameters fit the 8 GB card


class OpenAIShaped:
    """A loopback HTTP server speaking the two calls the judge makes, answering from a script (the judge's
    parsing and retries; the real servers are in tests/integration/test_vllm_serving.py)."""

    def __init__(self, replies):
        import http.server
        import threading

        self.replies, self.bodies = list(replies), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, code, data):
                body = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, {"data": [{"id": "judge-model"}]})

            def do_POST(self):
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                code, text = outer.replies.pop(0)
                if isinstance(text, bytes):  # not JSON at all (a proxy's page)
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                    return
                self._send(code, {"choices": [{"message": {"content": text}}]} if code == 200 else {"error": text})

            def log_message(self, *args):
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_the_judge_asks_for_a_score_retries_and_says_what_it_got():
    from modelforge.launcher.evaluate import Judge, JudgeError

    row = rows(1)[0]
    page = (200, b"<html>proxy</html>")
    script = [(400, "response_format not supported"), (200, "I would say 7 out of 10."), (503, "busy"),
              (200, '{"score": 10}'), (200, "a fine answer"), (401, "bad key"), page, page, page]  # fmt: skip
    server = OpenAIShaped(script)
    try:
        judge = Judge(server.url, api_key="k", backoff=0)
        assert judge.rate(row, "answer number 0") == 70.0  # asked again without response_format, number read
        assert "response_format" in server.bodies[0] and "response_format" not in server.bodies[1]
        assert judge.rate(row, "answer number 0") == 100.0  # a 503 is retried
        with pytest.raises(JudgeError, match="answered 'a fine answer', not a score from 0 to 10"):
            judge.rate(row, "x")
        with pytest.raises(JudgeError, match="HTTP 401"):
            judge.rate(row, "x")  # a wrong key is said at once, not retried
        with pytest.raises(JudgeError, match="not an OpenAI API object"):
            judge.rate(row, "x")  # a page that is not JSON: retried like no answer, then said, never a traceback
        assert server.replies == []
        assert "Reference answer: answer number 0" in server.bodies[1]["messages"][0]["content"]
    finally:
        server.close()


def test_a_judge_that_fails_leaves_the_other_metrics_and_blocks_a_judge_gate(tmp_path):
    from modelforge.launcher.evaluate import Judge

    server = OpenAIShaped([(200, '{"score": 8}'), (200, '{"score": 2}'), (200, "no idea")])
    spec_ = evaluation(metrics=["rougeL", "judge"], judge={"endpoint": server.url},
                       gate={"metric": "judge", "minImprovement": 1})  # fmt: skip
    try:
        tuned, base = (lambda a, d: ([r.reference for r in a], False)), (lambda a, d: (["?" for _ in a], False))
        result = evaluate(spec_, rows(2), tuned, base, tmp_path, rater=Judge(server.url, backoff=0))
    finally:
        server.close()
    status = result.status
    by_name = {m.name: m for m in status.metrics}
    assert by_name[Metric.ROUGE_L].tuned == 100.0 and by_name[Metric.JUDGE].tuned is None
    assert "answered 'no idea', not a score from 0 to 10" in status.error
    decided = promotion(spec_, status)
    assert decided[:2] == (False, Reason.EVALUATION_FAILED) and "no judge score of the tuned model" in decided[2]
    first = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    assert "judge" not in first["tuned"]["scores"]  # a judge that stopped scores no row


def test_a_judges_key_reaches_the_pod_from_its_secret_only():
    from modelforge.render.training import render_attempt

    judge = {"endpoint": "http://judge.ml.svc:8000/v1", "apiKeySecretRef": {"name": "j", "key": "k"}}
    s = spec().model_copy(update={"evaluation": evaluation(metrics=["judge"], judge=judge)})
    objects = render_attempt(Owner("FineTuneJob", "tiny", "ml", "u"), s, 1, RenderSettings())
    pod = next(o for o in objects if o["kind"] == "Job")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MODELFORGE_JUDGE_API_KEY"] == {"name": "MODELFORGE_JUDGE_API_KEY",
                                               "valueFrom": {"secretKeyRef": {"name": "j", "key": "k"}}}  # fmt: skip
    assert "MODELFORGE_JUDGE_API_KEY" in __import__("modelforge.launcher.outcome", fromlist=["x"]).SECRET_ENV


def test_the_evaluation_files_claim_is_mounted_read_only_in_the_training_pod():
    from modelforge.render.training import render_attempt

    s = spec().model_copy(update={"evaluation": EvaluationSpec.model_validate(
        {"datasets": [{"source": "pvc://held-out/qa/test.jsonl"}]})})  # fmt: skip
    objects = render_attempt(Owner("FineTuneJob", "tiny", "ml", "u"), s, 1, RenderSettings())
    pod = next(o for o in objects if o["kind"] == "Job")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    claim = next(v for v in volumes.values() if v.get("persistentVolumeClaim", {}).get("claimName") == "held-out")
    assert claim["persistentVolumeClaim"]["readOnly"] is True
    assert mounts["/mnt/pvc/held-out"]["readOnly"] is True and mounts["/mnt/pvc/held-out"]["name"] == claim["name"]


def test_a_thinking_models_reasoning_is_not_scored():
    from modelforge.launcher.evaluate import final_answer

    assert final_answer("<think>\nThe user wants Paris.\n</think>\n\nParis") == "Paris"
    assert final_answer("<think>\n\n</think>\n\nOpen Settings.") == "Open Settings."
    assert final_answer("<think>still thinking when maxNewTokens ran out") == ""
    assert final_answer("No thinking here.") == "No thinking here."
