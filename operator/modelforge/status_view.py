"""What `modelforge status` and `modelforge watch` print: one FineTuneJob or ModelServe as a person reads it.

Pure: an object as the API server returns it in, lines of text out (no colours: the CLI adds none when
the output is not a terminal, and none are needed to read it).
"""

from __future__ import annotations

import math
from typing import Any

from .api.evaluation import EvaluationStatus
from .plan.evaluation import report_lines
from .plan.phases import not_promoted

FINISHED = {"Succeeded": 0, "Failed": 1}  # phase -> the exit code of `watch`
BAR = 30
SPARK = "▁▂▃▄▅▆▇█"  # eight levels, lowest first
SPARK_ASCII = "_.-:=+*#"  # the same eight levels where the terminal cannot print the blocks


def bar(step: int | None, total: int | None) -> str:
    if not step or not total:
        return ""
    filled = min(BAR, int(BAR * step / total))
    return "[" + "#" * filled + "-" * (BAR - filled) + f"] {step}/{total} ({100 * step / total:.0f}%)"


def sparkline(values: list[float], levels: str = SPARK) -> str:
    """One character per value, scaled between the values' min (the first level) and max (the last);
    a flat curve draws the first level throughout."""
    if not values:
        return ""
    low, high = min(values), max(values)
    top = len(levels) - 1
    if high == low:
        return levels[0] * len(values)
    return "".join(levels[int(top * (v - low) / (high - low) + 0.5)] for v in values)


def loss_line(history: Any, ascii_only: bool = False) -> str:
    """`loss        █▇▅▃▂▂▁▁  7.61 -> 2.03` from status.progress.lossHistory; empty under two points."""
    if not isinstance(history, list):
        return ""
    values = [float(v) for v in history if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
    if len(values) < 2:
        return ""
    spark = sparkline(values, SPARK_ASCII if ascii_only else SPARK)
    return f"  loss        {spark}  {values[0]:.4g} -> {values[-1]:.4g}"


def evaluation_lines(reported: Any) -> list[str]:
    """status.evaluation as the table `modelforge run` printed (plan/evaluation.py report_lines)."""
    if not isinstance(reported, dict):
        return []
    try:
        table = report_lines(EvaluationStatus.model_validate(reported))
    except ValueError:
        return []
    return [f"  {'evaluation' if i == 0 else '':<11} {line}" for i, line in enumerate(table)]


def describe(obj: dict[str, Any], ascii_only: bool = False) -> list[str]:
    """The lines to print; `ascii_only` draws the loss sparkline in ASCII (for an output that cannot
    encode the block characters)."""
    kind, meta = obj.get("kind", "?"), obj.get("metadata", {})
    status = obj.get("status") or {}
    lines = [f"{kind} {meta.get('namespace', '')}/{meta.get('name', '?')}: {status.get('phase') or 'Pending'}"]
    progress = status.get("progress") or {}
    if kind == "FineTuneJob":
        line = bar(progress.get("step"), progress.get("totalSteps"))
        extra = [f"loss {progress['loss']:.4g}" if progress.get("loss") is not None else "",
                 f"{progress['tokensPerSecond']:,.0f} tok/s" if progress.get("tokensPerSecond") else "",
                 f"eta {progress['eta']}" if progress.get("eta") else ""]  # fmt: skip
        if line or any(extra):
            lines.append("  progress    " + "  ".join(p for p in (line, *extra) if p))
        if loss := loss_line(progress.get("lossHistory"), ascii_only):
            lines.append(loss)
        if status.get("attempt"):
            preempted = f", preempted {status['preemptions']}x by Kueue" if status.get("preemptions") else ""
            lines.append(f"  attempt     {status['attempt']} (restarts {status.get('restarts') or 0}{preempted})")
        if progress.get("resumedFrom"):
            lines.append(f"  resumed     from {progress['resumedFrom']}")
        if status.get("latestCheckpoint"):
            lines.append(f"  checkpoint  {status['latestCheckpoint']}")
        for key, value in (status.get("outputs") or {}).items():
            lines.append(f"  output      {key}: {value}")
        lines += evaluation_lines(status.get("evaluation"))
        serve = (obj.get("spec") or {}).get("serve")
        if status.get("serveName"):
            lines.append(f"  serve       ModelServe {status['serveName']} (spec.serve)")
        elif isinstance(serve, dict):
            name = serve.get("name") or meta.get("name", "?")
            blocked = not_promoted(status.get("conditions") or [])
            when = (
                "not created: the evaluation did not promote the output"
                if blocked
                else "created when the job "
                "succeeds" + (" and its evaluation passes" if (obj.get("spec") or {}).get("evaluation") else "")
            )
            lines.append(f"  serve       ModelServe {name}, {when} (spec.serve)")
    else:
        made_by = (meta.get("labels") or {}).get("modelforge.io/from-job")  # set on the ModelServe of spec.serve
        if made_by:
            lines.append(f"  made by     FineTuneJob {made_by} (its spec.serve)")
        model = ((obj.get("spec") or {}).get("model") or {}).get("fromFineTuneJob")
        if model:
            lines.append(f"  model       the output of FineTuneJob {model}")
        if status.get("endpoint"):
            lines.append(f"  endpoint    {status['endpoint']}  ({status.get('readyReplicas') or 0} ready)")
        if status.get("models"):
            lines.append(f"  models      {', '.join(status['models'])}")
        for adapter in status.get("adapters") or []:
            message = f": {adapter['message']}" if adapter.get("message") else ""
            lines.append(f"  adapter     {adapter['name']} {adapter['state']}{message}")
    for condition in status.get("conditions") or []:
        lines.append(f"  {condition.get('type', '?'):<11} {condition.get('status', '?'):<5} "
                     f"{condition.get('reason', '')}: {condition.get('message', '')}")  # fmt: skip
    return lines
