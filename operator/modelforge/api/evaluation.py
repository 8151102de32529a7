"""FineTuneJob.spec.evaluation and status.evaluation: test the trained model before it is served.

After training (and the merge), rank 0 answers a held-out question file with the tuned model and, by default,
with the base model, scores both against the reference answers, and records the comparison. A gate on one
metric decides whether the job's output is promoted: served by spec.serve and by any ModelServe that names
the job in model.fromFineTuneJob. Scores are percentages (0-100), as ms-swift's own metrics print them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from .base import ApiModel, CelRule, Str1k, Str253
from .common import SecretKeyRef

METRIC_LIMIT = 8  # metrics one evaluation computes (and status lists)


class Metric(StrEnum):
    """How an answer is scored against its reference (each 0-100, averaged over the rows)."""

    EXACT_MATCH = "exactMatch"  # the answer equals the reference (whitespace and case folded)
    CONTAINS = "contains"  # the answer contains the reference (folded the same way)
    ROUGE_L = "rougeL"  # ROUGE-L F1 on words (the `rouge` package, as ms-swift's own metric)
    BLEU = "bleu"  # sentence BLEU-4 with smoothing (NLTK, as ms-swift's own metric)
    CHRF = "chrf"  # character n-gram F-score (NLTK's chrF)
    JUDGE = "judge"  # an LLM's 0-10 rating of the answer against the reference (evaluation.judge), x10


# The environment variable a training pod gets evaluation.judge.apiKeySecretRef's value in (never an argument).
JUDGE_API_KEY_ENV = "MODELFORGE_JUDGE_API_KEY"


DEFAULT_METRICS = (Metric.ROUGE_L, Metric.BLEU, Metric.EXACT_MATCH, Metric.CONTAINS)


class EvalDatasetSpec(ApiModel):
    """A question file with reference answers."""

    cel_rules = (
        CelRule(
            "!self.source.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://') || self.source.startsWith('pvc://')",
            "an evaluation dataset is a file on a claim (pvc://claim/path/file.jsonl) or a path (local mode); "
            "hub datasets and URLs are not read for evaluation",
            ".source",
        ),
    )

    source: Str1k = Field(
        description="pvc://claim/path/file.jsonl, or a path (local mode; relative to the spec file). JSON Lines "
        'rows: {"messages": [...]} whose last assistant turn is the reference answer, or {"query": ..., '
        '"response": ...}; either may carry "images" for a vision-language model. Pre-flight reads every row '
        "before training starts.",
    )
    samples: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        default=None, description="Use only the first N rows of this file."
    )


class JudgeSpec(ApiModel):
    """An OpenAI-compatible chat endpoint that rates each answer against its reference (metric judge)."""

    cel_rules = (
        CelRule(
            "self.endpoint.matches('^https?://')",
            "judge.endpoint must be an http:// or https:// URL (the API root, e.g. http://judge.ml.svc:8000/v1)",
            ".endpoint",
        ),
    )

    endpoint: Str1k = Field(
        description="The API root, e.g. http://judge.ml.svc:8000/v1 (a ModelServe's endpoint, vLLM, any "
        "OpenAI-compatible server). Reached from the training pod: a NetworkPolicy must let it out."
    )
    model: Str253 | None = Field(default=None, description="The model to ask. Default: the first one it lists.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="The endpoint's API key, from a Secret in the job's namespace: an environment variable of the "
        "training pod, never in argv, status, events or logs.",
    )


class EvalGate(ApiModel):
    """When the tuned model is good enough to promote. Set minimum, minImprovement or both."""

    cel_rules = (
        CelRule(
            "has(self.minimum) || has(self.minImprovement)",
            "a gate needs minimum, minImprovement or both (e.g. minImprovement: 0 to require no regression)",
        ),
    )

    metric: Metric = Field(description="The metric the gate reads; must be one of evaluation.metrics.")
    minimum: Annotated[float, Field(ge=0, le=100)] | None = Field(
        default=None, description="The tuned model's score must be at least this (0-100)."
    )
    min_improvement: Annotated[float, Field(ge=-100, le=100)] | None = Field(
        default=None,
        description="The tuned model's score minus the base model's must be at least this (needs baseline: true). "
        "0 means no regression; negative values tolerate one.",
    )


class EvaluationSpec(ApiModel):
    """Evaluate the trained model on held-out questions before it is served (see docs/evaluation.md)."""

    cel_rules = (
        CelRule(
            "!has(self.gate) || self.gate.metric in self.metrics",
            "evaluation.gate.metric must be one of evaluation.metrics",
            ".gate.metric",
        ),
        CelRule(
            "has(self.judge) == ('judge' in self.metrics)",
            "the judge metric and evaluation.judge go together: list judge in evaluation.metrics and say which "
            "endpoint judges in evaluation.judge (or remove both)",
            ".judge",
        ),
        CelRule(
            "!has(self.gate) || !has(self.gate.minImprovement) || self.baseline",
            "evaluation.gate.minImprovement compares with the base model: set baseline: true or use gate.minimum",
            ".gate.minImprovement",
        ),
    )

    datasets: Annotated[list[EvalDatasetSpec], Field(min_length=1, max_length=8)] = Field(
        description="Question files with reference answers, evaluated in order."
    )
    metrics: Annotated[list[Metric], Field(min_length=1, max_length=METRIC_LIMIT)] = Field(
        default_factory=lambda: list(DEFAULT_METRICS),
        description="exactMatch, contains, rougeL, bleu, chrf, judge (each 0-100). Default: rougeL, bleu, "
        "exactMatch, contains.",
    )
    baseline: bool = Field(
        default=True,
        description="Also answer the questions with the base model, so that status shows base, tuned and the "
        "difference (doubles the evaluation time).",
    )
    judge: JudgeSpec | None = Field(
        default=None, description="The endpoint that rates answers for the judge metric (an LLM as judge)."
    )
    gate: EvalGate | None = Field(
        default=None,
        description="Promote the output (spec.serve, fromFineTuneJob) only when the tuned model passes. Without "
        "a gate the scores are recorded and the output is promoted.",
    )
    max_new_tokens: Annotated[int, Field(ge=1, le=32_768)] = Field(
        default=256, description="Longest answer generated per question (greedy decoding, temperature 0)."
    )
    timeout_seconds: Annotated[int, Field(ge=10, le=604_800)] = Field(
        default=3600,
        description="Budget for the whole evaluation (base and tuned). Rows not answered in time are left out: "
        "the result is marked partial and the gate reads the rows both models answered.",
    )


class MetricScore(ApiModel):
    """One metric, base and tuned (0-100)."""

    name: Metric = Field(description="The metric.")
    base: Annotated[float, Field(ge=0, le=100)] | None = Field(default=None, description="The base model's score.")
    tuned: Annotated[float, Field(ge=0, le=100)] | None = Field(default=None, description="The tuned model's score.")
    delta: Annotated[float, Field(ge=-100, le=100)] | None = Field(default=None, description="tuned - base.")


class EvaluationStatus(ApiModel):
    """What the evaluation measured and whether the output was promoted."""

    rows: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Questions scored.")
    total_rows: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Questions in the files.")
    partial: bool | None = Field(
        default=None, description="true when timeoutSeconds cut the evaluation: rows < totalRows."
    )
    metrics: Annotated[list[MetricScore], Field(max_length=METRIC_LIMIT)] | None = Field(
        default=None, description="Scores per metric: base, tuned, delta."
    )
    eval_loss: float | None = Field(
        default=None, description="The last validation loss of the training run (when it had a validation set)."
    )
    passed: bool | None = Field(
        default=None, description="Whether the gate passed (absent without a gate or when the evaluation failed)."
    )
    verdict: Str1k | None = Field(default=None, description="The gate's numbers, or why there is no verdict.")
    summary: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="Short form for kubectl get, e.g. rougeL 41.2 (+18.5) pass."
    )
    error: Str1k | None = Field(default=None, description="Why the evaluation could not run or finish.")
    seconds: Annotated[float, Field(ge=0)] | None = Field(default=None, description="How long it took.")
    results: Str1k | None = Field(
        default=None, description="Every question with both answers and their scores (eval/results.jsonl)."
    )
    report: Str1k | None = Field(default=None, description="The Markdown report (eval/report.md).")
    chart: Str1k | None = Field(default=None, description="Base vs tuned per metric as a PNG (eval/scores.png).")
