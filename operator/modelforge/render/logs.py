"""Which pod and container `modelforge logs` reads, decided from the object and its pods. Pure.

- A FineTuneJob (torchrun): the current attempt's pod of node rank N (the Indexed Job's completion index;
  default 0). A node's processes share their pod's log; rank 0 holds the loss lines.
- A FineTuneJob (`distributed.runtime: ray`): the driver's log, which KubeRay's submitter pod prints
  (`ray job submit` follows it); Ray Train's workers print there too, so there is no log per rank. Until
  the submitter exists, the head's.
- A ModelServe: replica N's engine (replicas in the order they were created; default the oldest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..plan.lifecycle import completion_index
from .names import label_value

TRAINER = "trainer"
ENGINE = "engine"
RAY_SUBMITTER = "ray-job-submitter"
RAY_HEAD = "ray-head"


class NoLogs(ValueError):
    """There is no pod to read yet (or no such rank): the message says which, and what to do."""


@dataclass(frozen=True)
class LogTarget:
    pod: str
    container: str
    phase: str  # the pod's phase when it was chosen


def log_selector(obj: dict[str, Any], attempt: int | None = None) -> dict[str, str] | None:
    """The labels of the pods to choose from: the current attempt's (or `attempt`'s), or the serve's. None:
    nothing started."""
    name = label_value(obj.get("metadata", {}).get("name", ""))
    if obj.get("kind") == "ModelServe":
        return {"modelforge.io/serve": name}
    attempt = attempt or (obj.get("status") or {}).get("attempt")
    if not attempt:
        return None
    return {"modelforge.io/job": name, "modelforge.io/attempt": str(attempt)}


def _phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def _target(pod: dict[str, Any], container: str) -> LogTarget:
    return LogTarget(pod["metadata"]["name"], container, _phase(pod))


def _labels(pod: dict[str, Any]) -> dict[str, str]:
    return pod.get("metadata", {}).get("labels") or {}


def _none(phase: str, what: str) -> str:
    """ "no pods" while starting, "no pods any more" once the object is done (its pods were cleaned up)."""
    return f"no {what} any more" if phase in ("Succeeded", "Failed", "Suspended") else f"no {what}"


def log_target(
    obj: dict[str, Any], pods: list[dict[str, Any]], rank: int | None = None, attempt: int | None = None
) -> LogTarget:
    """The pod and container to read. `rank`: a FineTuneJob's node rank, a ModelServe's replica index.
    `attempt`: a FineTuneJob's attempt (default the current one); `pods` are that attempt's."""
    kind, name = obj.get("kind", "FineTuneJob"), obj.get("metadata", {}).get("name", "?")
    status = obj.get("status") or {}
    phase = status.get("phase") or "Pending"
    live = [p for p in pods if not p.get("metadata", {}).get("deletionTimestamp")] or pods
    if kind == "ModelServe" and attempt:
        raise NoLogs(f"ModelServe {name} has replicas, not attempts: omit --attempt (--rank picks a replica)")
    current = int(status.get("attempt") or 0)
    if attempt and attempt != current:
        if not 1 <= attempt < current:
            had = f"attempts 1..{current}" if current > 1 else (f"attempt {current}" if current else "no attempt yet")
            raise NoLogs(f"FineTuneJob {name} has had {had} (phase {phase}); there is no attempt {attempt}")
        if not pods:
            namespace = obj.get("metadata", {}).get("namespace", "default")
            raise NoLogs(
                f"attempt {attempt} of FineTuneJob {name} has no pods any more: an attempt that a newer one replaced "
                f"(a restart, a spec change, a suspend) is deleted with its pods. Why it ended is in the job's events "
                f"while the API server keeps them (an hour by default): kubectl get events -n {namespace} "
                f"--field-selector involvedObject.name={name}"
            )
    if kind == "ModelServe":
        replicas = sorted(live, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
        index = rank or 0
        if index >= len(replicas):
            have = f"replicas 0..{len(replicas) - 1}" if replicas else _none(phase, "engine pods")
            raise NoLogs(f"ModelServe {name} has {have} (phase {phase}); --rank picks a replica")
        return _target(replicas[index], ENGINE)
    if log_selector(obj) is None:
        raise NoLogs(f"FineTuneJob {name} has started no training pod yet (phase {phase}): "
                     f"`modelforge status {name}` says why")  # fmt: skip
    attempt = attempt or current
    if ((obj.get("spec") or {}).get("distributed") or {}).get("runtime") == "ray":
        if rank:
            raise NoLogs(f"FineTuneJob {name} runs on Ray: its workers print to the driver's log, which is rank "
                         f"0's (omit --rank)")  # fmt: skip
        for role, container in (("submitter", RAY_SUBMITTER), ("head", RAY_HEAD)):
            found = [p for p in live if _labels(p).get("modelforge.io/ray-node") == role]
            if found:  # KubeRay may have retried the submitter: the newest, a running one first
                newest = max(found, key=lambda p: (_phase(p) in ("Pending", "Running"),
                                                   p["metadata"].get("creationTimestamp") or ""))  # fmt: skip
                return _target(newest, container)
        raise NoLogs(f"attempt {attempt} of FineTuneJob {name} has {_none(phase, 'Ray pods')} (phase {phase})")
    wanted = str(rank or 0)
    for pod in live:
        if completion_index(pod) == wanted:
            return _target(pod, TRAINER)
    if len(live) == 1 and completion_index(live[0]) is None and wanted == "0":
        return _target(live[0], TRAINER)
    ranks = sorted(int(i) for i in (completion_index(p) for p in live) if i is not None and i.isdigit())
    which = f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
    have = f"pods only for {which}" if ranks else _none(phase, "pods")
    raise NoLogs(f"attempt {attempt} of FineTuneJob {name} has {have} (phase {phase}); no pod for rank {wanted}")
