"""When the operator reconciles what: a watch-fed cache of our objects, and one poller for active ones.

- A new object, or a spec change (metadata.generation differs from status.observedGeneration), is
  reconciled at once, in the watch handler's thread.
- Every `poll_seconds` the poller reconciles the objects that are still active: FineTuneJobs that are not
  Succeeded/Failed (their pods and rank 0's /progress change without any event on the FineTuneJob) and
  every ModelServe (its engine's /v1/models). Finished FineTuneJobs cost no periodic API call.
- One reconcile per object at a time (a per-object lock); a busy object is skipped by the poller.
- The status patch's answer replaces the cached object, so the next poll never acts on a status older than
  the one it wrote (which could create an attempt twice).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from ..plan.phases import job_phase_of, refused_status
from .kube import api_refusal

log = logging.getLogger("modelforge.reconcilers")
FINISHED = ("Succeeded", "Failed")
MAX_RETRY_SECONDS = 300.0  # backoff of a reconcile that keeps failing: poll x 2^failures, at most this
Key = tuple[str, str, str]  # (plural, namespace, name)
Reconcile = Callable[..., None]


class StatusPatch(dict[str, Any]):
    """What a reconcile writes (`patch.status[key] = value`, as kopf's Patch offers it) and the Events it
    wants posted; those are posted only once the status patch is written, so a reconcile that keeps
    failing to write its status does not post the same Event on every poll."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str, str]] = []

    @property
    def status(self) -> dict[str, Any]:
        return self.setdefault("status", {})


def _resource_version(obj: dict[str, Any]) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _spec_unobserved(obj: dict[str, Any]) -> bool:
    generation = obj.get("metadata", {}).get("generation")
    return generation is not None and (obj.get("status") or {}).get("observedGeneration") != generation


def _active(plural: str, obj: dict[str, Any]) -> bool:
    """Worth a periodic look: a FineTuneJob that has not finished, any ModelServe, and any object whose
    latest spec has not been reconciled yet (a reconcile that failed is retried on the next poll)."""
    if _spec_unobserved(obj):
        return True
    return plural != "finetunejobs" or job_phase_of(obj.get("status") or {}).value not in FINISHED


def _needs_reconcile(plural: str, obj: dict[str, Any], initial: bool) -> bool:
    if _spec_unobserved(obj):
        return True  # new, or its spec changed
    return initial and _active(plural, obj)  # the operator (re)started: look at every active object once now


class Reconcilers:
    def __init__(self, memo: Any, reconcile: dict[str, Reconcile]):
        self.memo = memo
        self.reconcile = reconcile
        self.objects: dict[Key, dict[str, Any]] = {}
        # A lock per object while runs hold or wait for it, with their count: freed when the last one leaves.
        self.locks: dict[Key, tuple[threading.Lock, int]] = {}
        self.failures: dict[Key, tuple[int, float, str]] = {}  # (failures in a row, retry after, last error)
        self.failed_generations: dict[Key, Any] = {}  # the metadata.generation whose reconcile failed last
        self.guard = threading.Lock()
        self.stopped = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=memo.config.workers, thread_name_prefix="reconcile")
        self.thread = threading.Thread(target=self._poll_forever, name="poller", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=60)
        self.pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------------------ the watch

    def on_event(self, plural: str, event: kopf.RawEvent) -> None:
        obj = cast(dict[str, Any], event.get("object") or {})
        meta = obj.get("metadata") or {}
        key = (plural, str(meta.get("namespace")), str(meta.get("name")))
        if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
            # Gone, or going (the garbage collector removes its children): never reconcile it again, or a
            # child the collector just removed would be recreated. Its lock is freed once no run holds or waits
            # for it (`run`), so a reconcile in flight and one of a new object with the same name never overlap.
            with self.guard:
                self.objects.pop(key, None)
                self.failures.pop(key, None)
                self.failed_generations.pop(key, None)
            if plural == "finetunejobs":
                self.memo.metrics.observe_phase(f"{key[1]}/{key[2]}", None)
            else:
                self.memo.metrics.observe_serve(key[1], key[2], None)
            return
        initial = event.get("type") is None  # kopf's initial listing
        if plural == "finetunejobs":
            self.memo.metrics.observe_phase(f"{key[1]}/{key[2]}", (obj.get("status") or {}).get("phase"))
        else:
            self.memo.metrics.observe_serve(key[1], key[2], obj.get("status") or {})
        self._store(key, obj)
        if _needs_reconcile(plural, obj, initial) and not self._backing_off(key, obj):
            self.run(key)

    def _backing_off(self, key: Key, obj: dict[str, Any]) -> bool:
        """A reconcile of this spec failed and its backoff has not run out: the poller retries it then. (Our own
        status write about a refusal is an event too: reconciling on it at once would retry without backoff.)
        A new spec (generation) is reconciled at once."""
        with self.guard:
            _, retry_at, _ = self.failures.get(key, (0, 0.0, ""))
            failed_generation = self.failed_generations.get(key)
        generation = obj.get("metadata", {}).get("generation")
        return retry_at > time.monotonic() and failed_generation == generation

    def _store(self, key: Key, obj: dict[str, Any], only_update: bool = False) -> None:
        """Cache `obj`; `only_update`: only if the cached object is the same one (uid) and older, so a status
        patch's answer never brings back an object deleted meanwhile."""
        with self.guard:
            cached = self.objects.get(key)
            same = cached is not None and cached.get("metadata", {}).get("uid") == obj.get("metadata", {}).get("uid")
            if only_update and not same:
                return
            if not same or _resource_version(obj) >= _resource_version(cached or {}):
                self.objects[key] = obj

    # --------------------------------------------------------------------------- reconciling

    def run(self, key: Key, blocking: bool = True) -> None:
        with self.guard:
            lock, users = self.locks.get(key) or (threading.Lock(), 0)
            self.locks[key] = (lock, users + 1)
        try:
            if not lock.acquire(blocking=blocking):
                return
            try:
                with self.guard:
                    obj = self.objects.get(key)
                if obj is not None:
                    self._reconcile_one(key, obj)
            finally:
                lock.release()
        finally:
            with self.guard:
                lock, users = self.locks[key]
                if users > 1:
                    self.locks[key] = (lock, users - 1)
                else:  # nobody holds or waits for it: the next run makes a new one (none kept per object)
                    del self.locks[key]

    def _reconcile_one(self, key: Key, obj: dict[str, Any]) -> None:
        plural, namespace, name = key
        body = kopf.Body(cast(kopf.RawBody, obj))
        patch = StatusPatch()
        logger = logging.LoggerAdapter(log, {"object": f"{plural}/{namespace}/{name}"})
        try:
            self.reconcile[plural](body=body, patch=patch, memo=self.memo, logger=logger)
            if patch.get("status"):
                uid = obj.get("metadata", {}).get("uid")
                updated = self.memo.kube.patch_status(plural, namespace, name, patch["status"], uid)
                if updated is None:  # deleted meanwhile
                    with self.guard:
                        if self.objects.get(key) is obj:
                            self.objects.pop(key, None)
                    return
                self._store(key, updated, only_update=True)
            for kind, reason, message in patch.events:
                self.memo.kube.post_event(body, kind, reason, message)
            self.failures.pop(key, None)
            self.failed_generations.pop(key, None)
        except Exception as exc:  # an API hiccup, or a bug: retried with backoff, and said once as an Event
            self._failed(key, body, exc, logger)

    def _failed(self, key: Key, body: kopf.Body, exc: Exception, logger: logging.LoggerAdapter[Any]) -> None:
        plural, namespace, name = key
        count, _, last = self.failures.get(key, (0, 0.0, ""))
        delay = min(MAX_RETRY_SECONDS, float(self.memo.config.poll_seconds) * 2**count)
        refusal = api_refusal(exc)  # the API server refused a write: its whole message, never a first line
        error = refusal or f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        self.failures[key] = (count + 1, time.monotonic() + delay, error)
        self.failed_generations[key] = body.get("metadata", {}).get("generation")
        logger.warning(f"reconcile of {plural} {namespace}/{name} failed ({count + 1} in a row), "
                       f"retrying in {delay:.0f} s: {error}")  # fmt: skip
        if refusal is not None:
            with contextlib.suppress(Exception):  # said in the object's conditions too, where users look first
                self._say_refused(key, body, refusal)
        if error != last:  # a new error is worth telling the object's owner; the same one again is not
            with contextlib.suppress(Exception):  # the API may be what failed
                self.memo.kube.post_event(body, "Warning", "ReconcileFailed",
                                          f"the operator could not reconcile this object and retries with "
                                          f"backoff: {error}")  # fmt: skip

    def _say_refused(self, key: Key, body: kopf.Body, refusal: str) -> None:
        plural, namespace, name = key
        status = dict(body.get("status") or {})
        kind = "FineTuneJob" if plural == "finetunejobs" else "ModelServe"
        new = refused_status(kind, status, refusal, datetime.now(UTC).replace(tzinfo=None),
                             body.get("metadata", {}).get("generation"))  # fmt: skip
        if new == status:
            return
        changed = {k: new[k] for k in ("conditions", "phase")}
        updated = self.memo.kube.patch_status(plural, namespace, name, changed, body.get("metadata", {}).get("uid"))
        if updated is not None:
            self._store(key, updated, only_update=True)

    def _poll_forever(self) -> None:
        interval = float(self.memo.config.poll_seconds)
        while not self.stopped.wait(interval):
            started = time.monotonic()
            now = time.monotonic()
            with self.guard:
                due = [k for k, o in self.objects.items()
                       if _active(k[0], o) and self.failures.get(k, (0, 0.0, ""))[1] <= now]  # fmt: skip
            try:
                futures = [self.pool.submit(self.run, key, False) for key in due]
                for future in futures:
                    future.result()
            except (RuntimeError, CancelledError):  # the operator is stopping
                return
            spent = time.monotonic() - started
            if spent > interval:
                log.warning(f"one poll of {len(due)} active object(s) took {spent:.1f} s (poll every {interval} s)")
