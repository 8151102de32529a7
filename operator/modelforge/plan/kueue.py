"""Kueue's word on a queued attempt: why its Job waits, or that Kueue preempted it, read from the Workload that
Kueue's batch/Job integration keeps for the Job (label kueue.x-k8s.io/job-uid). Pure: the controller reads the
Workload (controller/kube.py kueue_workload), plan/lifecycle.py puts these words in the Admitted condition.

How a FineTuneJob is a Kueue workload (docs/operator.md, "Kueue"): each attempt's Job carries the queue label
(and the priority-class label), is created suspended, and Kueue's own Job integration admits it: one pod set of
`nodes` pods, so all nodes are admitted together or not at all, and nothing runs before admission. The operator
never unsuspends a Job. When Kueue preempts it, Kueue suspends the Job; the Job controller deletes its pods
with their grace period; each trainer saves a checkpoint at the step it reached (launcher SIGTERM path); Kueue
requeues the Workload and, readmitted, unsuspends the same Job, whose new pods resume from that checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# A condition reason as the API server requires it (metav1.Condition): what Kueue writes always is.
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class KueueWait:
    """Why Kueue holds a Workload back, in Kueue's own reason and message."""

    reason: str
    message: str
    preempted: bool  # Kueue evicted it to make room for another workload (the reason is Kueue's Preempted)


def _conditions(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(c.get("type")): c for c in (workload.get("status") or {}).get("conditions") or [] if isinstance(c, dict)
    }


def _true(condition: dict[str, Any] | None) -> bool:
    return condition is not None and condition.get("status") == "True"


def _reason(condition: dict[str, Any], default: str) -> str:
    reason = str(condition.get("reason") or "")
    return reason if _REASON.match(reason) and len(reason) <= 128 else default


def kueue_wait(workload: dict[str, Any] | None) -> KueueWait | None:
    """Kueue's reason and message for a Workload that is not admitted; None when there is no Workload, or Kueue
    has said nothing yet (a new Workload), or it is admitted.

    - Evicted (preempted, or another eviction): the eviction's reason and message, and, once Kueue has requeued
      it, what it now waits for (QuotaReserved=False), when that says something else.
    - Not admitted for quota, or inadmissible: QuotaReserved=False's reason (Pending, Inadmissible) and message
      ("couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu ...").
    - Quota reserved, admission checks outstanding: the Admitted condition's words."""
    if not workload:
        return None
    conditions = _conditions(workload)
    evicted, reserved, admitted = conditions.get("Evicted"), conditions.get("QuotaReserved"), conditions.get("Admitted")
    waiting = reserved if reserved is not None and reserved.get("status") == "False" else None
    if _true(evicted) and evicted is not None:
        reason = _reason(evicted, "Evicted")
        message = str(evicted.get("message") or f"evicted by Kueue ({reason})")
        then = str((waiting or {}).get("message") or "")
        if then and then != message:
            message = f"{message.rstrip('.')}. Now: {then}"
        preempted = reason == "Preempted" or _true(conditions.get("Preempted"))
        return KueueWait(reason, message[:MESSAGE_LIMIT], preempted)
    if waiting is not None:
        reason = _reason(waiting, "Pending")
        return KueueWait(reason, str(waiting.get("message") or reason)[:MESSAGE_LIMIT], False)
    if _true(reserved) and not _true(admitted):
        said = admitted or reserved or {}
        return KueueWait(_reason(said, "QuotaReserved"), str(said.get("message") or "")[:MESSAGE_LIMIT], False)
    return None
