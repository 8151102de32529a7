"""Evaluate before you serve: answer held-out questions with the base and the tuned model, score both, report.

The same in a pod (rank 0, after training and the merge), in `modelforge run`, and in `modelforge eval`.
Answers come from the engine `swift infer` uses (launcher/infer.py; greedy, temperature 0) or from any
OpenAI-compatible endpoint. Scores are the libraries ms-swift's own NLG metric uses: `rouge` for ROUGE-L and
NLTK for BLEU-4 and chrF, on words (each CJK character a word, as a segmenter would at worst), 0-100.
The evaluation has a budget: the base model gets half of it, the tuned model answers the questions the base
model answered in the rest, and a cut run is compared on the rows both answered (said as partial).

Files under <output>/eval/: results.jsonl (one line per question: both answers and their scores),
report.md (the table and a few examples) and scores.png (base vs tuned per metric).
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api.evaluation import EvaluationSpec, EvaluationStatus, Metric, MetricScore
from ..client import EndpointError, chat, list_models
from ..plan.evaluation import judge, report_lines
from .dataset import NORMALIZERS, RowError, detect_format, iter_rows
from .infer import InferenceError, LocalModel, swift_answers

EVAL_DIR = "eval"
EXAMPLES_IN_REPORT = 5
PROBLEMS_SHOWN = 10


class EvalFileError(ValueError):
    """An evaluation file with unusable rows; `problems` are `file:line: why`, the message says the first."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


@dataclass(frozen=True)
class EvalRow:
    where: str  # file:line, for the report and for errors
    messages: list[dict[str, str]]  # the turns up to the question (no reference)
    reference: str
    media: dict[str, Any] = field(default_factory=dict)  # images / videos / audios, as in training rows

    @property
    def question(self) -> str:
        return self.messages[-1]["content"]

    def request(self) -> dict[str, Any]:
        return {"messages": self.messages, **self.media}


def _row(row: Any) -> tuple[list[dict[str, str]], str, dict[str, Any]]:
    if not isinstance(row, dict):
        raise RowError("not a JSON object")
    fmt = detect_format(row)
    if fmt is None or fmt == "text":
        raise RowError('needs {"messages": [...]} ending with the reference answer, or {"query": ..., "response": ...}')
    try:
        turns = NORMALIZERS[fmt](row)
    except RowError as exc:
        if "no assistant turn" in str(exc) or "ends with a" in str(exc):  # said for evaluation, not training
            raise RowError("the last turn must be the assistant's reference answer") from None
        raise
    if len(turns) < 2 or turns[-2]["role"] != "user":
        raise RowError("the reference answer must follow a user question")
    media = {key: row[key] for key in ("images", "videos", "audios") if row.get(key)}
    return turns[:-1], turns[-1]["content"], media


def read_eval_file(path: Path, samples: int | None = None) -> tuple[list[EvalRow], list[str]]:
    """(rows, problems as `file:line: why`) of one evaluation file; the first `samples` rows when given."""
    if not path.is_file():
        return [], [f"{path}: file not found"]
    rows: list[EvalRow] = []
    problems: list[str] = []
    try:
        for line, item in iter_rows(path):
            if samples is not None and len(rows) + len(problems) >= samples:
                break
            try:
                if isinstance(item, RowError):
                    raise item
                messages, reference, media = _row(item)
            except RowError as exc:
                problems.append(f"{path}:{line}: {exc}")
                continue
            rows.append(EvalRow(f"{path}:{line}", messages, reference, media))
    except OSError as exc:
        return [], [f"{path}: cannot be read ({exc.strerror or exc})"]
    if not rows and not problems:
        problems.append(f"{path}: no rows")
    return rows, problems


def load_eval_rows(files: Iterable[tuple[Path, int | None]]) -> list[EvalRow]:
    """Every row of every file, in order; EvalFileError naming file:line when any row is unusable."""
    rows: list[EvalRow] = []
    problems: list[str] = []
    for path, samples in files:
        got, bad = read_eval_file(path, samples)
        rows += got
        problems += bad
    if problems:
        raise EvalFileError(problems)
    return rows


# Scoring ------------------------------------------------------------------------------------------------------

_WORD = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+"
)


def words(text: str) -> list[str]:
    """Lower-cased words; each CJK character is a word (no segmenter is installed; ms-swift uses jieba)."""
    return _WORD.findall(text.lower())


def _folded(text: str) -> str:
    return " ".join(words(text))


ROUGE_WORDS = 400  # the `rouge` package's LCS recurses once per word of both texts: bounded under Python's limit


def _rouge_l(answer: list[str], reference: list[str]) -> float:
    from rouge import Rouge

    answer, reference = answer[:ROUGE_WORDS], reference[:ROUGE_WORDS]
    if not answer or not reference:
        return 0.0
    return float(Rouge(metrics=["rouge-l"]).get_scores(" ".join(answer), " ".join(reference))[0]["rouge-l"]["f"])


def _bleu(answer: list[str], reference: list[str]) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    if not answer or not reference:
        return 0.0
    return float(sentence_bleu([reference], answer, smoothing_function=SmoothingFunction().method3))


def _chrf(answer: str, reference: str) -> float:
    from nltk.translate.chrf_score import sentence_chrf

    if not answer.strip() or not reference.strip():
        return 0.0
    return float(sentence_chrf(reference, answer))


def score(metric: Metric, answer: str, reference: str) -> float:
    """One answer against its reference, 0-100."""
    if metric == Metric.EXACT_MATCH:
        value = float(_folded(answer) == _folded(reference))
    elif metric == Metric.CONTAINS:
        value = float(bool(_folded(reference)) and f" {_folded(reference)} " in f" {_folded(answer)} ")
    elif metric == Metric.ROUGE_L:
        value = _rouge_l(words(answer), words(reference))
    elif metric == Metric.BLEU:
        value = _bleu(words(answer), words(reference))
    else:
        value = _chrf(answer, reference)
    return round(100.0 * value, 4)


def score_all(metrics: Iterable[Metric], answers: list[str], rows: list[EvalRow]) -> list[dict[str, float]]:
    """Each answer's reference-based scores (the judge's are added by judge_all)."""
    local = [m for m in metrics if m != Metric.JUDGE]
    return [
        {m.value: score(m, answer, row.reference) for m in local} for answer, row in zip(answers, rows, strict=True)
    ]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


# Answering ----------------------------------------------------------------------------------------------------

_THINKING = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


def final_answer(text: str) -> str:
    """What is scored: the answer without a thinking model's `<think>...</think>` block (a block that
    maxNewTokens cut before it closed leaves nothing), as a person reads the answer."""
    return _THINKING.sub("", text).strip()


# (rows, deadline as time.monotonic()) -> (answers of the leading rows answered in time, whether time cut it)
Answerer = Callable[[list[EvalRow], float], tuple[list[str], bool]]


def local_answerer(
    target: LocalModel, *, max_new_tokens: int, env: Mapping[str, str] | None = None, sink: Any = None
) -> Answerer:
    def answer(rows: list[EvalRow], deadline: float) -> tuple[list[str], bool]:
        texts, cut = swift_answers(target, [r.request() for r in rows], max_new_tokens=max_new_tokens,
                                   deadline=deadline, env=env, sink=sink)  # fmt: skip
        return [final_answer(t) for t in texts], cut

    return answer


def endpoint_answerer(endpoint: str, *, model: str | None, api_key: str | None, max_new_tokens: int) -> Answerer:
    """Answers from an OpenAI-compatible endpoint (a ModelServe, vLLM, `swift deploy`), one question at a time."""

    def answer(rows: list[EvalRow], deadline: float) -> tuple[list[str], bool]:
        name = model or list_models(endpoint, api_key)[0]
        texts: list[str] = []
        for row in rows:
            left = deadline - time.monotonic()
            if left <= 0:
                return texts, True
            if row.media:
                raise EndpointError(f"{row.where}: rows with images, videos or audios are answered by a local model")
            reply = chat(endpoint, row.messages, model=name, api_key=api_key, max_tokens=max_new_tokens,
                         timeout=max(1.0, min(600.0, left)))  # fmt: skip
            texts.append(final_answer(reply.text))
        return texts, False

    return answer


# The judge ----------------------------------------------------------------------------------------------------

JUDGE_PROMPT = (
    "You grade an answer against a reference answer.\n\nQuestion: {question}\n\nReference answer: {reference}\n\n"
    "Answer to grade: {answer}\n\nDoes the answer say what the reference says, correctly? Reply with only the "
    "score, an integer from 0 (wrong or unrelated) to 10 (the same meaning)."
)
# Servers that honour it (vLLM, OpenAI) constrain the reply to this schema: one of the integers 0-10, nothing
# else (an object would leave room for whitespace before the number). One that refuses it is asked again
# without, and its reply's first number 0-10 is read.
JUDGE_FORMAT = {"type": "json_schema", "json_schema": {"name": "score", "schema": {"enum": list(range(11))}}}
JUDGE_TRIES = 3
_SCORE = re.compile(r"\b(10|[0-9])\b")


class JudgeError(RuntimeError):
    """The judge could not be reached, refused, or answered something that is not a score."""


class Judge:
    """Rates an answer 0-10 against its reference with an OpenAI-compatible model; the score is that x10.
    Unreachable or 5xx: retried (JUDGE_TRIES, 2 s then 4 s apart); 4xx (a wrong key) and garbage: JudgeError."""

    def __init__(self, endpoint: str, model: str | None = None, api_key: str | None = None, backoff: float = 2.0):
        self.endpoint, self.model, self.api_key, self.backoff = endpoint, model, api_key, backoff
        self.structured = True

    def _ask(self, messages: list[dict[str, str]], timeout: float) -> str:
        for attempt in range(JUDGE_TRIES):
            try:
                self.model = self.model or list_models(self.endpoint, self.api_key, timeout=min(timeout, 30))[0]
                extra = {"response_format": JUDGE_FORMAT} if self.structured else None
                return chat(self.endpoint, messages, model=self.model, api_key=self.api_key, max_tokens=32,
                            timeout=timeout, extra=extra).text  # fmt: skip
            except (ValueError, KeyError, IndexError, TypeError, http.client.HTTPException) as exc:
                raise JudgeError(f"judge {self.endpoint}: an answer that is not an OpenAI chat completion "
                                 f"({type(exc).__name__}: {str(exc)[:200]})") from None  # fmt: skip
            except EndpointError as exc:
                if exc.status == 400 and self.structured:
                    self.structured = False  # a server without structured outputs: ask in plain text
                    continue
                if (exc.status is not None and exc.status < 500) or attempt == JUDGE_TRIES - 1:
                    raise JudgeError(f"judge {exc}") from None
                time.sleep(self.backoff * 2**attempt)
        raise JudgeError(f"judge {self.endpoint}: no answer")  # pragma: no cover - the loop returns or raises

    def rate(self, row: EvalRow, answer: str, timeout: float = 120) -> float:
        prompt = JUDGE_PROMPT.format(question=row.question, reference=row.reference, answer=answer or "(empty)")
        text = final_answer(self._ask([{"role": "user", "content": prompt}], timeout))
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):  # {"score": N}, as some judges answer whatever they are asked
            value = value.get("score")
        if not isinstance(value, int):
            found = _SCORE.search(text)
            value = int(found.group(1)) if found else None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10:
            said = f"judge {self.endpoint} ({self.model}) answered {text[:80]!r}"
            raise JudgeError(f"{said}, not a score from 0 to 10")
        return 10.0 * value


def judge_all(
    rater: Judge,
    rows: list[EvalRow],
    answers: dict[str, list[str]],
    scores: dict[str, list[dict[str, float]]],
    deadline: float,
) -> str | None:
    """The judge's score into each row's scores, for each model; None, or why it stopped (its words)."""
    rated = 0
    for i, row in enumerate(rows):
        for who, texts in answers.items():
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise JudgeError(f"the judge rated {rated} of {len(rows) * len(answers)} answers within "
                                     "timeoutSeconds")  # fmt: skip
                scores[who][i][Metric.JUDGE.value] = rater.rate(row, texts[i], timeout=max(1.0, min(120.0, left)))
            except JudgeError as exc:
                for model_scores in scores.values():  # a judge that stops scores no row: no mean of a few
                    for entry in model_scores:
                        entry.pop(Metric.JUDGE.value, None)
                return str(exc)
            rated += 1
    return None


# The evaluation -----------------------------------------------------------------------------------------------


@dataclass
class Evaluated:
    status: EvaluationStatus  # judged against the spec's gate (plan/evaluation.py), paths as written here
    lines: list[str]  # the table and the verdict, for a terminal or the pod's log


def evaluate(
    spec: EvaluationSpec,
    rows: list[EvalRow],
    tuned: Answerer,
    base: Answerer | None,
    out_dir: Path,
    *,
    labels: tuple[str, str] = ("base", "tuned"),
    eval_loss: float | None = None,
    display: Callable[[Path], str] = str,
    say: Callable[[str], None] = lambda line: None,
    rater: Judge | None = None,
    scrub: Callable[[str], str] = lambda text: text,
) -> Evaluated:
    """Answer, score, write results.jsonl, report.md and scores.png into `out_dir`, and judge the gate.
    An engine that fails gives a status with `error` (and whatever was scored before), never an exception."""
    started = time.monotonic()
    deadline = started + spec.timeout_seconds
    metrics = list(spec.metrics)
    base_answers: list[str] | None = None
    tuned_answers: list[str] = []
    cut = False
    error = None
    asked = rows
    if base is not None and spec.baseline:
        say(f"evaluation: the {labels[0]} model answers {len(rows)} question(s)")
        try:
            base_answers, cut = base(rows, started + spec.timeout_seconds / 2)
            asked = rows[: len(base_answers)]
        except (InferenceError, EndpointError, OSError) as exc:  # the tuned model is still worth scoring
            error = f"the {labels[0]} model: {_first_line(exc)}"
            say(f"evaluation: the {labels[0]} model failed: {exc}")
    if asked:
        say(f"evaluation: the {labels[1]} model answers {len(asked)} question(s)")
        try:
            tuned_answers, tuned_cut = tuned(asked, deadline)
            cut = cut or tuned_cut
        except (InferenceError, EndpointError, OSError) as exc:
            error = "; ".join(e for e in (error, f"the {labels[1]} model: {_first_line(exc)}") if e)
            say(f"evaluation: the {labels[1]} model failed: {exc}")
    n = len(tuned_answers) if base_answers is None else min(len(tuned_answers), len(base_answers))
    scored = rows[:n]
    tuned_scores = score_all(metrics, tuned_answers[:n], scored)
    base_scores = score_all(metrics, base_answers[:n], scored) if base_answers is not None else None
    if rater is not None and Metric.JUDGE in metrics and n:
        say(f"evaluation: the judge ({rater.endpoint}) rates the answers")
        answers = {labels[1]: tuned_answers}
        scores = {labels[1]: tuned_scores}
        if base_answers is not None and base_scores is not None:
            answers[labels[0]], scores[labels[0]] = base_answers, base_scores
        stopped = judge_all(rater, scored, answers, scores, deadline)
        if stopped is not None:
            say(f"evaluation: no judge scores: {stopped}")
            error = f"{error}; {stopped}" if error else stopped
    table = []
    for m in metrics:
        tuned_mean = _mean([s[m.value] for s in tuned_scores if m.value in s])
        base_mean = _mean([s[m.value] for s in base_scores if m.value in s]) if base_scores is not None else None
        table.append(MetricScore(name=m, base=base_mean, tuned=tuned_mean))
    if n == 0 and error is None:
        error = "no question was answered within timeoutSeconds" if cut else "no question was answered"
    elif cut:
        say(f"evaluation: timeoutSeconds ({spec.timeout_seconds} s) cut it: {n} of {len(rows)} question(s) scored")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "results.jsonl"
    with results.open("w", encoding="utf-8") as handle:
        for i, row in enumerate(scored):
            entry: dict[str, Any] = {"where": row.where, "question": row.question, "reference": row.reference,
                                     labels[1]: {"answer": tuned_answers[i], "scores": tuned_scores[i]}}  # fmt: skip
            if base_answers is not None and base_scores is not None:
                entry[labels[0]] = {"answer": base_answers[i], "scores": base_scores[i]}
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
    measured = EvaluationStatus(
        rows=n, total_rows=len(rows), partial=cut and n < len(rows), metrics=table if n else None, eval_loss=eval_loss,
        error=scrub(error)[:1024] if error else None, seconds=round(time.monotonic() - started, 1),
        results=display(results),
    )  # fmt: skip
    judged = judge(spec, measured)
    lines = report_lines(judged, labels)
    report = out_dir / "report.md"
    report.write_text(_markdown(judged, lines, scored, tuned_answers, base_answers, labels), encoding="utf-8")
    from .plots import write_score_chart

    chart, why_not = write_score_chart(judged, out_dir / "scores.png", labels)
    if chart is None:
        say(why_not)
    judged = judged.model_copy(update={"report": display(report), "chart": display(chart) if chart else None})
    for line in lines:
        say(line)
    return Evaluated(judged, lines)


def _markdown(
    status: EvaluationStatus,
    lines: list[str],
    rows: list[EvalRow],
    tuned: list[str],
    base: list[str] | None,
    labels: tuple[str, str],
) -> str:
    out = ["# Evaluation", "", f"| metric | {labels[0]} | {labels[1]} | delta |", "|---|---:|---:|---:|"]
    for m in status.metrics or ():
        cells = ["-" if v is None else f"{v:.1f}" for v in (m.base, m.tuned)]
        delta = "-" if m.delta is None else f"{m.delta:+.1f}"
        out.append(f"| {m.name} | {cells[0]} | {cells[1]} | {delta} |")
    out += ["", *[line for line in lines[1 + len(status.metrics or ()) :]], "", "## Examples", ""]
    for i, row in enumerate(rows[:EXAMPLES_IN_REPORT]):
        out += [f"**{row.where}**", "", f"- question: {row.question}", f"- reference: {row.reference}"]
        if base is not None:
            out.append(f"- {labels[0]}: {base[i]}")
        out += [f"- {labels[1]}: {tuned[i]}", ""]
    return "\n".join(out) + "\n"


def adapter_base(adapter: Path) -> tuple[str, str | None, str | None] | None:
    """(base model, model_type, template) a LoRA checkpoint was trained with: ms-swift's args.json beside or
    above it; None when there is none."""
    for folder in (adapter, adapter.parent):
        try:
            args = json.loads((folder / "args.json").read_text())
        except (OSError, ValueError):
            continue
        model = args.get("model") if isinstance(args, dict) else None
        if isinstance(model, str) and model:
            kind, template = args.get("model_type"), args.get("template")
            return model, kind if isinstance(kind, str) else None, template if isinstance(template, str) else None
    return None
