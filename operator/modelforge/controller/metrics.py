"""Prometheus metrics of the operator itself: jobs by phase, reconcile durations, restarts."""

from __future__ import annotations

import collections
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge("modelforge_finetunejobs", "FineTuneJobs by phase.", ["phase"], registry=self.registry)
        self.reconcile_seconds = Histogram(
            "modelforge_reconcile_seconds", "Time to reconcile one FineTuneJob.", registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.restarts = Counter("modelforge_restarts_total", "Automatic gang restarts.", registry=self.registry)
        self._phases: dict[str, str] = {}
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def observe_phase(self, key: str, phase: str | None) -> None:
        """Record one job's phase (None when it is gone) and refresh the per-phase gauge."""
        with self._lock:
            if phase is None:
                self._phases.pop(key, None)
            else:
                self._phases[key] = phase
            counts = collections.Counter(self._phases.values())
            self._known |= set(counts)
            for value in self._known:
                self.jobs.labels(value).set(counts.get(value, 0))

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)
