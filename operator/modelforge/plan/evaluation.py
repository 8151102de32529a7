"""The evaluation gate, pure: the verdict on measured scores, and whether a job's output is promoted.

The launcher measures (launcher/evaluate.py) and reports the scores; the operator judges them against the
spec it holds (`judge`), so a launcher of another version, or a user's own image, cannot promote an output
by saying `passed: true`. `modelforge run` and `modelforge eval` print the same verdict.
"""

from __future__ import annotations

from typing import Any

from ..api.conditions import Reason
from ..api.evaluation import METRIC_LIMIT, EvalGate, EvaluationSpec, EvaluationStatus, MetricScore

# What a launcher may report (the rest of EvaluationStatus is the operator's own judgement of it).
MEASURED_KEYS = ("rows", "totalRows", "partial", "metrics", "evalLoss", "error", "seconds", "results", "report",
                 "chart")  # fmt: skip


def _number(value: float) -> str:
    """At most two decimals, as the gate compares them: 41.2, 39.99, 40."""
    return f"{round(value, 2):g}"


def _signed(value: float) -> str:
    return f"{round(value, 2):+g}"


def _score(status: EvaluationStatus, metric: str) -> MetricScore | None:
    return next((m for m in status.metrics or () if m.name == metric), None)


def _gate_checks(gate: EvalGate, score: MetricScore) -> tuple[bool | None, list[str]]:
    """(passed, what each check found); passed None when a score the gate needs was not measured."""
    said: list[str] = []
    passed: bool | None = True
    tuned = None if score.tuned is None else round(score.tuned, 2)
    if tuned is None:
        return None, [f"no {gate.metric} score of the tuned model was recorded"]
    if gate.minimum is not None:
        ok = tuned >= gate.minimum
        said.append(f"tuned {_number(tuned)} {'>=' if ok else '<'} minimum {_number(gate.minimum)}")
        passed = passed and ok
    if gate.min_improvement is not None:
        if score.base is None:
            said.append("no base-model score to compare with (the baseline did not run)")
            passed = None
        else:
            delta = round(tuned - round(score.base, 2), 2)
            ok = delta >= gate.min_improvement
            said.append(
                f"{_signed(delta)} over the base model ({_number(score.base)}) "
                f"{'>=' if ok else '<'} minImprovement {_signed(gate.min_improvement)}"
            )
            passed = None if passed is None else passed and ok
    return passed, said


def summary_line(status: EvaluationStatus, metric: str | None, passed: bool | None) -> str | None:
    """`rougeL 41.2 (+18.5) pass` for kubectl get: the gate's metric (or the first one) and the verdict."""
    score = _score(status, metric) if metric else next(iter(status.metrics or ()), None)
    if score is None or score.tuned is None:
        return "failed" if status.error else None
    text = f"{score.name} {_number(score.tuned)}"
    if score.delta is not None:
        text += f" ({_signed(score.delta)})"
    if passed is not None:
        text += " pass" if passed else " fail"
    if status.partial:
        text += " partial"
    return text[:64]


def judge(spec: EvaluationSpec, measured: EvaluationStatus) -> EvaluationStatus:
    """The measured scores with the gate's verdict: passed, verdict (the numbers) and summary."""
    gate = spec.gate
    metrics = [
        m.model_copy(update={"delta": None if m.base is None or m.tuned is None else round(m.tuned - m.base, 2)})
        for m in measured.metrics or ()
    ]  # tuned - base as the operator computes it, whatever the launcher said
    measured = measured.model_copy(update={"metrics": metrics or None})
    update: dict[str, Any] = {"passed": None, "verdict": None}
    if gate is not None:
        score = _score(measured, gate.metric)
        if score is None:
            passed, said = None, [f"no {gate.metric} score was recorded"]
        else:
            passed, said = _gate_checks(gate, score)
        verdict = f"{gate.metric}: " + "; ".join(said)
        if measured.partial and measured.rows is not None and measured.total_rows:
            verdict += f" (on {measured.rows} of {measured.total_rows} questions: timeoutSeconds cut the evaluation)"
        if measured.error:
            verdict += f"; the evaluation reported: {measured.error}"
        update = {"passed": passed, "verdict": verdict[:1024]}
    elif measured.error:
        update["verdict"] = f"no gate; the evaluation reported: {measured.error}"[:1024]
    update["summary"] = summary_line(measured, gate.metric if gate else None, update["passed"])
    return measured.model_copy(update=update)


def promotion(spec: EvaluationSpec | None, status: EvaluationStatus | None) -> tuple[bool, Reason, str] | None:
    """(promoted, reason, message) for the condition Promoted of a succeeded job; None without spec.evaluation."""
    if spec is None:
        return None
    if status is None or not status.metrics:
        why = status.error if status is not None and status.error else "the launcher recorded no evaluation"
        if spec.gate is None:
            return True, Reason.EVALUATION_RECORDED, f"no gate: promoted without scores ({why})"
        return (
            False,
            Reason.EVALUATION_FAILED,
            (
                f"not promoted: the evaluation recorded no scores ({why}); evaluate the output by hand with "
                "`modelforge eval`, then serve it with a ModelServe that names it"
            ),
        )
    if spec.gate is None:
        return True, Reason.EVALUATION_RECORDED, f"promoted (no gate): {status.summary or 'scores recorded'}"
    if status.passed:
        return True, Reason.EVALUATION_PASSED, f"promoted: {status.verdict}"
    if status.passed is None:
        return False, Reason.EVALUATION_FAILED, f"not promoted: the gate could not be decided: {status.verdict}"
    return False, Reason.EVALUATION_BELOW_THRESHOLD, f"not promoted: {status.verdict}"


def measured_status(reported: Any) -> EvaluationStatus | None:
    """What a launcher reported, keeping only the fields (and metric entries) that fit the API model: a
    launcher of another version, extra keys, wrong types or garbage lose a field, never the reconcile."""
    if not isinstance(reported, dict):
        return None
    kept: dict[str, Any] = {}
    for key in MEASURED_KEYS:
        value = reported.get(key)
        if key == "metrics" and isinstance(value, list):
            fits = EvaluationStatus.field_fits
            named = [
                e for e in value[:METRIC_LIMIT] if isinstance(e, dict) and fits("metrics", [{"name": e.get("name")}])
            ]
            entries = [{k: v for k, v in e.items() if fits("metrics", [{"name": e["name"], k: v}])} for e in named]
            value = [e for e in entries if "name" in e] or None
        if value is not None and EvaluationStatus.field_fits(key, value):
            kept[key] = value
    return EvaluationStatus.model_validate(kept) if kept else None


def report_lines(status: EvaluationStatus, labels: tuple[str, str] = ("base", "tuned")) -> list[str]:
    """The scores as a fixed-width table, then the verdict: what `modelforge run/eval/status` print."""
    lines = [f"{'metric':<12}{labels[0]:>10}{labels[1]:>10}{'delta':>10}"]
    for m in status.metrics or ():
        cells = [m.base, m.tuned, m.delta]
        text = [f"{v:>10.1f}" if v is not None else f"{'-':>10}" for v in cells[:2]]
        text.append(f"{cells[2]:>+10.1f}" if cells[2] is not None else f"{'-':>10}")
        lines.append(f"{m.name:<12}" + "".join(text))
    scored = f"{status.rows} of {status.total_rows} question(s) scored" if status.total_rows is not None else ""
    if status.partial:
        scored += " (partial: timeoutSeconds cut the evaluation)"
    if scored:
        lines.append(scored)
    if status.eval_loss is not None:
        lines.append(f"validation loss of the run: {status.eval_loss:.4g}")
    if status.verdict:
        lines.append(("PASS " if status.passed else "FAIL " if status.passed is False else "") + status.verdict)
    elif status.error:
        lines.append(f"evaluation error: {status.error}")
    return lines
