"""Why pods are not doing their work yet, read once for both kinds (training attempts and serving replicas).

The most telling evidence wins: a container that ran out of memory, one that keeps crashing, an image
that will not pull, then a pod the scheduler cannot place (with the scheduler's own words).
"""

from __future__ import annotations

from typing import Any

from ..api.conditions import Reason
from ..api.redact import redact

PULL_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


def pod_trouble(
    pods: tuple[dict[str, Any], ...], oom_advice: str = "raise resources.memory"
) -> tuple[Reason, str] | None:
    """(reason, message naming the pod) for the first pod in trouble, or None.

    `oom_advice` is what the person should change when a container was OOMKilled (it differs per kind).
    A training pod never restarts (restartPolicy Never), so for it only the pull and scheduling cases
    can arise here; its failures are read from the terminated container instead.
    """
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status", {})
        for init in status.get("initContainerStatuses") or []:  # e.g. a vLLM pod's chat-template step
            state = init.get("state") or {}
            ended = state.get("terminated") or (init.get("lastState") or {}).get("terminated") or {}
            crashing = (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff"
            if crashing or ended.get("exitCode", 0) != 0:
                said = redact(ended.get("message") or "").strip().splitlines()
                detail = f": {said[-1]}" if said else f" (exit code {ended.get('exitCode', '?')})"
                return Reason.CRASH_LOOP_BACK_OFF, f"pod {name}: its {init.get('name', 'init')} step failed{detail}"
        for container in status.get("containerStatuses") or []:
            state = container.get("state") or {}
            # The serve agent sidecar, not the engine: say so (its memory is not resources.memory).
            who = f"{name} (its serve agent sidecar)" if container.get("name") == "agent" else name
            advice = (
                "the agent's own limit is 128Mi: report it as a bug" if container.get("name") == "agent" else oom_advice
            )
            last = (container.get("lastState") or {}).get("terminated") or {}
            if "OOMKilled" in (last.get("reason"), (state.get("terminated") or {}).get("reason")):
                return Reason.OOM_KILLED, f"pod {who}: ran out of memory (OOMKilled); {advice}"
            waiting = state.get("waiting") or {}
            if waiting.get("reason") == "CrashLoopBackOff":
                return Reason.CRASH_LOOP_BACK_OFF, f"pod {who}: the container keeps crashing"
            if waiting.get("reason") in PULL_ERRORS:
                detail = redact(waiting.get("message") or "") or f"cannot pull {container.get('image', 'the image')}"
                return Reason.IMAGE_PULL_BACK_OFF, f"pod {who}: {detail}"
        for condition in status.get("conditions") or []:
            unschedulable = (condition.get("type"), condition.get("status"), condition.get("reason")) == (
                "PodScheduled", "False", "Unschedulable"
            )  # fmt: skip
            if unschedulable:
                return Reason.UNSCHEDULABLE, f"pod {name}: {redact(condition.get('message', ''))}"
    return None
