"""The loss curve as a picture: `<output>/plots/loss.png` from ms-swift's logging.jsonl, at the end of a run.

Two panels over the optimizer step: training loss (and evaluation loss when the run evaluated), and the
learning rate. matplotlib with the Agg backend (no display, no GUI toolkit); a resumed run's appended lines
plot as one curve. A plot that cannot be drawn never fails the training: the caller gets None and a reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SIZE_INCHES, DPI = (8.0, 6.0), 100  # an 800 x 600 PNG


def read_curves(logging_jsonl: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per series — loss, eval_loss, learning_rate — from ms-swift's logging lines; a step
    logged twice (a resumed run repeats the steps after its checkpoint) keeps its last value."""
    curves: dict[str, dict[int, float]] = {"loss": {}, "eval_loss": {}, "learning_rate": {}}
    for line in logging_jsonl.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            step = int(str(entry["global_step/max_steps"]).split("/", 1)[0])
        except (ValueError, KeyError, TypeError):
            continue
        for name, points in curves.items():
            value = entry.get(name)
            if isinstance(value, int | float) and "train_runtime" not in entry:
                points[step] = float(value)
    return {name: sorted(points.items()) for name, points in curves.items()}


def _figure() -> Any:
    """An 800 x 600 matplotlib Figure on the Agg backend (no display), or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=SIZE_INCHES, dpi=DPI)


def write_loss_plot(logging_jsonl: Path, out: Path) -> tuple[Path | None, str]:
    """Draw the curves into `out`; (out, "") when written, else (None, why not)."""
    try:
        curves = read_curves(logging_jsonl)
    except OSError as exc:
        return None, f"no loss plot: {logging_jsonl} cannot be read ({exc.strerror or exc})"
    if not curves["loss"]:
        return None, "no loss plot: the run logged no training loss"
    figure = _figure()
    if figure is None:
        return None, "no loss plot: matplotlib is not installed (pip install matplotlib)"
    try:
        loss, rate = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
        steps, values = zip(*curves["loss"], strict=True)
        loss.plot(steps, values, label="train loss", color="tab:blue")
        if curves["eval_loss"]:
            steps, values = zip(*curves["eval_loss"], strict=True)
            loss.plot(steps, values, "o-", label="eval loss", color="tab:orange")
        loss.set_ylabel("loss")
        loss.legend()
        loss.grid(alpha=0.3)
        if curves["learning_rate"]:
            steps, values = zip(*curves["learning_rate"], strict=True)
            rate.plot(steps, values, color="tab:green")
        rate.set_ylabel("learning rate")
        rate.set_xlabel("step")
        rate.grid(alpha=0.3)
        figure.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=DPI)
    except Exception as exc:  # matplotlib's own errors too: a picture never fails a finished training
        return None, f"no loss plot: {type(exc).__name__}: {str(exc)[:200]}"
    return out, ""


def write_score_chart(status: Any, out: Path, labels: tuple[str, str] = ("base", "tuned")) -> tuple[Path | None, str]:
    """Base vs tuned per metric (api/evaluation.py EvaluationStatus) as grouped bars; (out, "") or (None, why)."""
    metrics = [m for m in status.metrics or () if m.tuned is not None]
    if not metrics:
        return None, "no score chart: nothing was scored"
    figure = _figure()
    if figure is None:
        return None, "no score chart: matplotlib is not installed (pip install matplotlib)"
    try:
        axes = figure.subplots()
        width = 0.38
        positions = list(range(len(metrics)))
        if any(m.base is not None for m in metrics):
            bars = axes.bar([p - width / 2 for p in positions], [m.base or 0.0 for m in metrics], width,
                            label=labels[0], color="tab:gray")  # fmt: skip
            axes.bar_label(bars, fmt="%.1f")
        bars = axes.bar([p + width / 2 for p in positions], [m.tuned for m in metrics], width, label=labels[1],
                        color="tab:blue")  # fmt: skip
        axes.bar_label(bars, fmt="%.1f")
        axes.set_xticks(positions, [str(m.name) for m in metrics])
        axes.set_ylim(0, 105)
        axes.set_ylabel("score (0-100)")
        title = f"{status.rows} of {status.total_rows} question(s)" + (" (partial)" if status.partial else "")
        axes.set_title(title)
        axes.legend()
        axes.grid(axis="y", alpha=0.3)
        figure.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=DPI)
    except Exception as exc:  # a picture never fails an evaluation
        return None, f"no score chart: {type(exc).__name__}: {str(exc)[:200]}"
    return out, ""
