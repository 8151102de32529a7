"""Prometheus metrics of the operator itself: jobs and serves by phase, reconcile durations, restarts, and
each ModelServe's ready replicas and loaded adapters (from the statuses the operator writes)."""

from __future__ import annotations

import collections
import contextlib
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
        self.serves = Gauge("modelforge_modelserves", "ModelServes by phase.", ["phase"], registry=self.registry)
        self.ready_replicas = Gauge("modelforge_modelserve_ready_replicas", "A ModelServe's replicas passing "
                                    "readiness.", ["namespace", "modelserve"], registry=self.registry)  # fmt: skip
        self.adapters_loaded = Gauge("modelforge_modelserve_adapters_loaded", "A ModelServe's LoRA adapters "
                                     "loaded in every ready replica.", ["namespace", "modelserve"],
                                     registry=self.registry)  # fmt: skip
        self._phases: dict[str, str] = {}
        self._known: set[str] = set()
        self._serve_phases: dict[str, str] = {}
        self._serve_known: set[str] = set()
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

    def observe_serve(self, namespace: str, name: str, status: dict[str, object] | None) -> None:
        """Record one ModelServe's status (None when it is gone): its phase, ready replicas, loaded adapters."""
        key = f"{namespace}/{name}"
        with self._lock:
            if status is None:
                self._serve_phases.pop(key, None)
                for gauge in (self.ready_replicas, self.adapters_loaded):
                    with contextlib.suppress(KeyError):
                        gauge.remove(namespace, name)
            else:
                self._serve_phases[key] = str(status.get("phase") or "Pending")
                ready = status.get("readyReplicas")
                self.ready_replicas.labels(namespace, name).set(ready if isinstance(ready, int) else 0)
                adapters = status.get("adapters")
                loaded = [a for a in adapters if isinstance(a, dict) and a.get("state") == "Loaded"] \
                    if isinstance(adapters, list) else []  # fmt: skip
                self.adapters_loaded.labels(namespace, name).set(len(loaded))
            counts = collections.Counter(self._serve_phases.values())
            self._serve_known |= set(counts)
            for value in self._serve_known:
                self.serves.labels(value).set(counts.get(value, 0))

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)
