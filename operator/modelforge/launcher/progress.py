"""Training progress from ms-swift's logging.jsonl, served as JSON (/progress) and Prometheus (/metrics).

logging.jsonl (rank 0) has one object per logging step, e.g. {"loss": 7.6, "learning_rate": 9e-05,
"epoch": 0.06, "global_step/max_steps": "1/4", "remaining_time": "3s", "train_speed(s/it)": 0.04};
eval lines use eval_*; the last line is a summary. A resumed run appends to the same file.

Every training-loss point is kept, up to LOSS_POINTS_KEPT (then averaged into evenly wide points): a
resumed run's history includes the earlier attempts'; one resumed from an earlier checkpoint drops the
points from that step on. It is served downsampled to 32 points for the sparkline in `modelforge status`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..plan.lifecycle import downsample


@dataclass
class ProgressRecord:
    step: int | None = None
    total_steps: int | None = None
    percent: float | None = None
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    loss_history: list[float] | None = None  # the loss curve, downsampled (see downsample); oldest first
    learning_rate: float | None = None
    seconds_per_step: float | None = None
    tokens_per_second: float | None = None
    eta: str | None = None
    eta_seconds: float | None = None
    updated_at: str | None = None
    finished: bool = False
    latest_checkpoint: str | None = None  # the newest whole checkpoint (set by the launcher, not the log)
    resumed_from: str | None = None  # the checkpoint this attempt resumed from (set by the launcher)
    # Training SLIs (set by the launcher, not the log): see METRICS.
    seconds_to_first_step: float | None = None  # launcher start -> first logged step: GPUs held, not training
    seconds_since_step: float | None = None  # since the step last moved (a stall grows it)
    preflight_seconds: float | None = None
    checkpoint_save_seconds: float | None = None  # the newest checkpoint: its first file to its last
    tokens_per_second_per_gpu: float | None = None

    @property
    def summary(self) -> str | None:
        if self.step is None or not self.total_steps:
            return None
        return f"{self.step}/{self.total_steps} ({self.percent:.0f}%)"

    def wire(self) -> dict[str, Any]:
        """The /progress JSON: what the operator reads and maps into status.progress (plan/lifecycle.py
        progress_status, the one mapping)."""
        return {**asdict(self), "summary": self.summary}


LOSS_POINTS_KEPT = 4096  # loss points held (then halved by averaging neighbours); the sparkline shows 32


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressTracker:
    """Follows logging.jsonl incrementally (by byte offset) and keeps the latest ProgressRecord."""

    def __init__(self, path: Path, tokens_per_step: float | None = None, *, started: float | None = None,
                 gpus: int = 0, preflight_seconds: float | None = None):  # fmt: skip
        self.path = path
        self.tokens_per_step = tokens_per_step
        self.started = time.monotonic() if started is None else started  # the launcher's start (monotonic)
        self.gpus = gpus
        self._step_moved = self.started
        self._baseline_step: int | None = None
        self.record = ProgressRecord(preflight_seconds=preflight_seconds)
        self._losses: list[tuple[int, float]] = []  # training-loss points: (first step, loss), step ascending
        self._group: list[tuple[int, float]] = []  # the points of the next one, while fewer than _stride
        self._stride = 1  # points averaged into one (doubles each time the list is halved)
        self._losses_changed = False  # record.loss_history is recomputed only after new points
        self._offset = 0
        self._partial = ""
        self._lock = threading.Lock()
        self.evaluation: dict[str, Any] = {}

    def mark_start(self) -> None:
        """What the log held before this attempt is history: time to first step and stall time count from
        now, from a step after the one already logged (a resumed run appends to the same file)."""
        with self._lock:
            self._baseline_step = self.record.step
            self.record.seconds_to_first_step = None
            self.record.seconds_since_step = None
            self._step_moved = time.monotonic()

    def set_evaluation(self, evaluation: dict[str, Any]) -> None:
        """spec.evaluation's result (api/evaluation.py, camelCase): its scores join /metrics."""
        with self._lock:
            self.evaluation = dict(evaluation)

    def set_resumed_from(self, location: str | None) -> None:
        with self._lock:
            self.record.resumed_from = location

    def set_checkpoint(self, location: str | None, save_seconds: float | None = None) -> None:
        with self._lock:
            self.record.latest_checkpoint = location
            if save_seconds is not None:
                self.record.checkpoint_save_seconds = round(save_seconds, 3)

    def snapshot(self) -> ProgressRecord:
        with self._lock:
            return self._copy()

    def _copy(self) -> ProgressRecord:
        """A copy of the record for another thread (asdict copies the list fields too, so none is shared)."""
        return ProgressRecord(**asdict(self.record))

    def poll(self) -> ProgressRecord:
        """Read what was appended since the last poll. Safe from several threads at once (the HTTP
        handlers and the supervisor's tick): the offset, the partial line and the record move together
        under one lock, so every line is applied exactly once."""
        with self._lock:
            try:
                with self.path.open("r", encoding="utf-8", errors="replace") as handle:
                    handle.seek(self._offset)
                    chunk = handle.read()
                    self._offset = handle.tell()
            except FileNotFoundError:
                return self._copy()
            lines = (self._partial + chunk).split("\n")
            self._partial = lines.pop()  # an unterminated last line is completed by the next poll
            for line in lines:
                if line.strip():
                    try:
                        self._apply(json.loads(line))
                    except (json.JSONDecodeError, TypeError, ValueError):
                        continue
            if self._losses_changed:
                self.record.loss_history = downsample(self._curve())
                self._losses_changed = False
            now = time.monotonic()
            if self.record.step is not None and not self.record.finished:
                self.record.seconds_since_step = round(now - self._step_moved, 1)
            return self._copy()

    def _apply(self, entry: dict[str, Any]) -> None:
        record = self.record
        steps = entry.get("global_step/max_steps")
        if isinstance(steps, str) and "/" in steps:
            done, total = (int(x) for x in steps.split("/", 1))
            if done != record.step:
                self._step_moved = time.monotonic()
                if record.seconds_to_first_step is None and done != self._baseline_step:
                    record.seconds_to_first_step = round(self._step_moved - self.started, 1)
            record.step, record.total_steps = done, total
            record.percent = round(100.0 * done / total, 1) if total else None
        if "last_model_checkpoint" in entry or "train_runtime" in entry:
            record.finished = True
        if "loss" in entry:
            record.loss = float(entry["loss"])
            self._add_loss(record.step, record.loss)
        if "eval_loss" in entry:
            record.eval_loss = float(entry["eval_loss"])
        if "learning_rate" in entry:
            record.learning_rate = float(entry["learning_rate"])
        if "epoch" in entry:
            record.epoch = float(entry["epoch"])
        speed = entry.get("train_speed(s/it)")
        if speed is not None and "train_runtime" not in entry:
            record.seconds_per_step = float(speed)
            if self.tokens_per_step and record.seconds_per_step > 0:
                record.tokens_per_second = round(self.tokens_per_step / record.seconds_per_step, 1)
                if self.gpus:
                    record.tokens_per_second_per_gpu = round(record.tokens_per_second / self.gpus, 1)
            if record.step is not None and record.total_steps:
                remaining = max(0, record.total_steps - record.step) * record.seconds_per_step
                record.eta_seconds = remaining
                record.eta = format_duration(remaining)
        record.updated_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _add_loss(self, step: int | None, loss: float) -> None:
        """One training-loss point. A step at or before the last point's (a resume from an earlier
        checkpoint) drops the points from that step on, so the curve stays monotone in step. A long run
        keeps at most LOSS_POINTS_KEPT points: then neighbours are averaged in pairs and later points are
        averaged in groups as wide, so every point covers as many steps (a merged point is dropped on a
        resume only when it starts at or after the step resumed from)."""
        if not math.isfinite(loss):
            return  # a NaN/inf loss is still the latest loss; the curve cannot draw it
        if step is None:
            step = (self._group or self._losses or [(0, 0.0)])[-1][0]
        else:
            while self._losses and self._losses[-1][0] >= step:
                self._losses.pop()
            self._group = [p for p in self._group if p[0] < step]
        self._group.append((step, loss))
        if len(self._group) >= self._stride:
            self._losses.append((self._group[0][0], sum(v for _, v in self._group) / len(self._group)))
            self._group = []
            if len(self._losses) > LOSS_POINTS_KEPT:
                pairs = zip(self._losses[0::2], self._losses[1::2], strict=False)
                merged = [(a[0], (a[1] + b[1]) / 2) for a, b in pairs]
                self._losses = merged + ([self._losses[-1]] if len(self._losses) % 2 else [])
                self._stride *= 2
        self._losses_changed = True

    def _curve(self) -> list[float]:
        """Every kept point, and the group being filled (averaged) so the newest loss shows at once."""
        tail = [sum(v for _, v in self._group) / len(self._group)] if self._group else []
        return [loss for _, loss in self._losses] + tail


METRICS = (
    ("modelforge_train_step", "Optimizer steps done.", "step"),
    ("modelforge_train_total_steps", "Optimizer steps in the run.", "total_steps"),
    ("modelforge_train_epoch", "Fractional epoch.", "epoch"),
    ("modelforge_train_loss", "Latest training loss.", "loss"),
    ("modelforge_eval_loss", "Latest evaluation loss.", "eval_loss"),
    ("modelforge_train_learning_rate", "Current learning rate.", "learning_rate"),
    ("modelforge_train_tokens_per_second", "Training throughput over all GPUs.", "tokens_per_second"),
    ("modelforge_train_eta_seconds", "Estimated seconds remaining.", "eta_seconds"),
    # Training SLIs (docs/observability.md)
    ("modelforge_train_step_seconds", "Seconds per optimizer step (ms-swift's train_speed).", "seconds_per_step"),
    ("modelforge_train_tokens_per_second_per_gpu", "Training throughput per GPU (per process on CPUs).",
     "tokens_per_second_per_gpu"),
    ("modelforge_train_seconds_to_first_step", "Seconds from the launcher's start to the first step: the GPUs "
     "were held without training.", "seconds_to_first_step"),
    ("modelforge_train_seconds_since_step", "Seconds since the step last advanced (grows while stalled).",
     "seconds_since_step"),
    ("modelforge_train_preflight_seconds", "Seconds the dataset and model pre-flight took.", "preflight_seconds"),
    ("modelforge_train_checkpoint_save_seconds", "Seconds the newest checkpoint took to write (first file to "
     "last).", "checkpoint_save_seconds"),
)  # fmt: skip


class RecordCollector:
    """The record's known values as Prometheus gauges (prometheus_client renders the exposition format), and
    spec.evaluation's scores once the launcher has them (modelforge_evaluation_score{metric, model})."""

    def __init__(self, record: ProgressRecord, evaluation: dict[str, Any] | None = None):
        self.record = record
        self.evaluation = evaluation or {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, help_text, attr in METRICS:
            value = getattr(self.record, attr)
            if value is not None:
                yield GaugeMetricFamily(name, help_text, value=float(value))
        scores = [m for m in self.evaluation.get("metrics") or () if isinstance(m, dict)]
        if scores:
            text = "spec.evaluation: the mean score (0-100) of the base and the tuned model per metric."
            family = GaugeMetricFamily("modelforge_evaluation_score", text, labels=("metric", "model"))
            for score in scores:
                for model in ("base", "tuned"):
                    if isinstance(score.get(model), int | float):
                        family.add_metric((str(score.get("name")), model), float(score[model]))
            yield family


def prometheus_text(record: ProgressRecord, evaluation: dict[str, Any] | None = None) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecordCollector(record, evaluation))
    return generate_latest(registry).decode()


class ProgressServer:
    """GET /progress (JSON), /metrics (Prometheus), /healthz on a background thread."""

    def __init__(self, tracker: ProgressTracker, port: int, host: str = "0.0.0.0"):
        tracker_ref = tracker

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                record = tracker_ref.poll()
                if self.path.startswith("/progress"):
                    body = json.dumps(record.wire()).encode()
                    self._send(200, "application/json", body)
                elif self.path.startswith("/metrics"):
                    metrics = prometheus_text(record, tracker_ref.evaluation)
                    self._send(200, CONTENT_TYPE_LATEST, metrics.encode())
                elif self.path.startswith("/healthz"):
                    self._send(200, "text/plain", b"ok\n")
                else:
                    self._send(404, "text/plain", b"try /progress or /metrics\n")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="progress-server", daemon=True)

    def start(self) -> ProgressServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
