"""The reconcile scheduler (controller/reconcilers.py) without any API server: what runs when."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from modelforge.controller.reconcilers import Reconcilers


class FakeKube:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.patches: list[dict[str, Any]] = []

    def post_event(self, body: Any, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def patch_status(self, plural: str, ns: str, name: str, status: dict[str, Any], uid: str | None) -> dict:
        self.patches.append(status)
        return {"metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": "99"}, "status": status}


def memo(poll: float = 10) -> SimpleNamespace:
    metrics = SimpleNamespace(observe_phase=lambda key, phase: None)
    return SimpleNamespace(kube=FakeKube(), metrics=metrics, config=SimpleNamespace(workers=2, poll_seconds=poll))


def job(generation: int = 1, observed: int | None = None, phase: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if observed is not None:
        status["observedGeneration"] = observed
    if phase:
        status["phase"] = phase
    return {"apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob", "status": status,
            "metadata": {"name": "j", "namespace": "n", "uid": "u1", "generation": generation,
                         "resourceVersion": "1"}}  # fmt: skip


def test_a_failing_reconcile_backs_off_and_says_so_once() -> None:
    m = memo()
    calls = []

    def broken(**_: Any) -> None:
        calls.append(1)
        raise KeyError("spec.model")

    r = Reconcilers(m, {"finetunejobs": broken})
    r.on_event("finetunejobs", {"type": "ADDED", "object": job()})
    r.on_event("finetunejobs", {"type": "MODIFIED", "object": job()})
    assert len(calls) == 1  # an event about the same spec waits for the backoff (the poller retries it)
    r.run(("finetunejobs", "n", "j"))  # the poller, once the backoff has run out
    assert len(calls) == 2
    count, retry_at, error = r.failures[("finetunejobs", "n", "j")]
    assert count == 2 and retry_at > time.monotonic() + 15 and "KeyError" in error  # 10 s x 2^1
    assert [e[1] for e in m.kube.events] == ["ReconcileFailed"], m.kube.events  # the same error: one Event
    assert "KeyError: 'spec.model'" in m.kube.events[0][2]
    r.on_event("finetunejobs", {"type": "MODIFIED", "object": job(generation=2)})
    assert len(calls) == 3  # an edited spec is tried at once, backoff or not


def test_finished_jobs_are_not_polled_but_an_unobserved_spec_is() -> None:
    m = memo()
    r = Reconcilers(m, {"finetunejobs": lambda **_: None})
    r._store(("finetunejobs", "n", "done"), job(1, 1, "Succeeded"))
    r._store(("finetunejobs", "n", "changed"), job(2, 1, "Failed"))
    from modelforge.controller.reconcilers import _active

    assert not _active("finetunejobs", r.objects[("finetunejobs", "n", "done")])
    assert _active("finetunejobs", r.objects[("finetunejobs", "n", "changed")])


def test_a_deleting_object_leaves_the_cache_and_events_wait_for_the_status_write() -> None:
    m = memo()

    def reconcile(patch: Any, **_: Any) -> None:
        patch.status["phase"] = "Starting"
        patch.events.append(("Normal", "Starting", "attempt 1"))

    r = Reconcilers(m, {"finetunejobs": reconcile})
    r.on_event("finetunejobs", {"type": "ADDED", "object": job()})
    assert m.kube.patches == [{"phase": "Starting"}] and m.kube.events == [("Normal", "Starting", "attempt 1")]
    going = job()
    going["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    r.on_event("finetunejobs", {"type": "MODIFIED", "object": going})
    assert ("finetunejobs", "n", "j") not in r.objects


def test_runs_of_one_object_never_overlap_and_no_lock_outlives_them() -> None:
    """Each object's reconciles are serialized; once none runs or waits, no per-object lock is left (the
    operator used to keep one per name it ever saw)."""
    import threading

    m = memo()
    inside, most, entered = [0], [0], threading.Event()
    release = threading.Event()
    lock = threading.Lock()

    def reconcile(**_: Any) -> None:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        entered.set()
        release.wait(5)
        with lock:
            inside[0] -= 1

    r = Reconcilers(m, {"finetunejobs": reconcile})
    key = ("finetunejobs", "n", "j")
    r._store(key, job())
    first = threading.Thread(target=r.run, args=(key,))
    first.start()
    assert entered.wait(5)
    r.run(key, blocking=False)  # the poller skips a busy object
    second = threading.Thread(target=r.run, args=(key,))  # a watch event waits for it
    second.start()
    deadline = time.monotonic() + 5
    while r.locks.get(key, (None, 0))[1] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.locks[key][1] == 2  # the running one and the waiting one share one lock
    release.set()
    first.join(5)
    second.join(5)
    assert most[0] == 1 and r.locks == {}
    for n in range(50):  # many objects come and go: nothing accumulates
        other = ("finetunejobs", "n", f"j{n}")
        r._store(other, job())
        r.run(other)
    assert r.locks == {}
