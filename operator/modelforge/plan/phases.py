"""`status.phase` of both kinds, derived from their conditions: the one place a phase is computed.

Conditions are the API (the Kubernetes convention): each says one fact with a machine reason, and the
reconcilers only ever set conditions. `phase` is a summary for `kubectl get` and people; nothing reads it
back to decide what to do next.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ..api.conditions import ConditionType, Reason
from ..api.finetunejob import JobPhase
from ..api.modelserve import ServePhase

# Why a replica set that is not ready will not get there by waiting: the serve has failed.
SERVE_FAILURES = frozenset({Reason.INVALID_SPEC, Reason.MODEL_FAILED, Reason.OOM_KILLED, Reason.CRASH_LOOP_BACK_OFF})


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """Conditions with `kind` set; lastTransitionTime moves only when the status flips; observedGeneration
    says which spec (metadata.generation) the condition was computed from."""
    value = "True" if status else "False"
    out = [c for c in conditions if c.get("type") != kind]
    previous = next((c for c in conditions if c.get("type") == kind), None)
    changed = previous is None or previous.get("status") != value
    out.append(
        {
            "type": kind,
            "status": value,
            "reason": str(reason),
            "message": message[:4000],
            "lastTransitionTime": timestamp(now) if changed else previous["lastTransitionTime"],  # type: ignore[index]
            **({"observedGeneration": generation} if generation is not None else {}),
        }
    )
    order = [t.value for t in ConditionType]
    return sorted(out, key=lambda c: order.index(c["type"]) if c["type"] in order else len(order))


def _by_type(conditions: Iterable[Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for condition in conditions:
        c = condition if isinstance(condition, dict) else condition.to_wire()
        out[str(c.get("type"))] = c
    return out


def _true(c: dict[str, Any] | None) -> bool:
    return c is not None and c.get("status") == "True"


def job_phase(conditions: Iterable[Any]) -> JobPhase:
    """FineTuneJob: Failed/Succeeded are final; then Suspended; then what the Running condition says."""
    c = _by_type(conditions)
    validated = c.get(ConditionType.VALIDATED)
    if _true(c.get(ConditionType.FAILED)) or (validated is not None and validated.get("status") == "False"):
        return JobPhase.FAILED
    if _true(c.get(ConditionType.SUCCEEDED)):
        return JobPhase.SUCCEEDED
    if _true(c.get(ConditionType.SUSPENDED)):
        return JobPhase.SUSPENDED
    running = c.get(ConditionType.RUNNING)
    if running is None:
        return JobPhase.PENDING
    if _true(running):
        return JobPhase.RUNNING
    if running.get("reason") in (Reason.RESTARTING, Reason.SPEC_CHANGED):
        return JobPhase.RESTARTING
    admitted = c.get(ConditionType.ADMITTED)
    if admitted is not None and admitted.get("status") == "False":
        return JobPhase.QUEUED
    return JobPhase.STARTING


def not_promoted(conditions: Iterable[Any]) -> dict[str, Any] | None:
    """The condition Promoted=False of a FineTuneJob whose evaluation blocks its output from serving, else None
    (promoted, or no evaluation)."""
    promoted = _by_type(conditions).get(ConditionType.PROMOTED)
    return promoted if promoted is not None and promoted.get("status") == "False" else None


def job_phase_of(status: dict[str, Any]) -> JobPhase:
    """A stored status's phase: derived from its conditions; the stored `phase` only for a status that has no
    conditions at all (written by something else, e.g. a test or a much older operator)."""
    if status.get("conditions"):
        return job_phase(status["conditions"])
    try:
        return JobPhase(status.get("phase") or JobPhase.PENDING)
    except ValueError:
        return JobPhase.PENDING


def serve_phase(conditions: Iterable[Any]) -> ServePhase:
    """ModelServe: Ready (and not Degraded) is Ready; a reason in SERVE_FAILURES is Failed; loading is
    Loading; anything else (waiting for the model, scheduling, scaled to zero) is Pending."""
    c = _by_type(conditions)
    ready, available = c.get(ConditionType.READY), c.get(ConditionType.MODEL_AVAILABLE)
    if _true(ready):
        return ServePhase.DEGRADED if _true(c.get(ConditionType.DEGRADED)) else ServePhase.READY
    if any(x is not None and x.get("status") == "False" and x.get("reason") in SERVE_FAILURES
           for x in (ready, available)):  # fmt: skip
        return ServePhase.FAILED
    if ready is not None and ready.get("reason") == Reason.LOADING:
        return ServePhase.LOADING
    return ServePhase.PENDING


def refused_status(
    kind: str, status: dict[str, Any], message: str, now: datetime, generation: int | None
) -> dict[str, Any]:
    """The status of a FineTuneJob or ModelServe whose reconcile the API server refused a write of (a child
    object: a quota, a name, a webhook): condition ChildrenApplied False, reason ChildRefused, with the server's
    own words. The other conditions (and so the phase) are left as they are: they are the lifecycle's state.
    An object never reconciled before gets the phase its conditions give (Pending), never a blank one."""
    conditions = set_condition(list(status.get("conditions") or []), ConditionType.CHILDREN_APPLIED, False,
                               Reason.CHILD_REFUSED, f"the API server refused a request of the operator, "
                               f"which retries: {message}", now, generation)  # fmt: skip
    phase = status.get("phase") or (job_phase(conditions) if kind == "FineTuneJob" else serve_phase(conditions)).value
    return {**status, "conditions": conditions, "phase": phase}


def without_refusals(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conditions less ChildrenApplied: a reconcile says it afresh (the shell adds it again if a write fails)."""
    return [c for c in conditions if c.get("type") != ConditionType.CHILDREN_APPLIED]
