"""The FineTuneJob lifecycle as a pure function: (spec, status, observed children, now) -> decision.

The controller observes (Job, Pods, rank-0 /progress), calls `decide`, applies the decision (create or
delete an attempt, post events) and patches status. Everything that makes a phase truthful lives here
and is table-tested without a cluster.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..api.conditions import EXIT_RETRYABLE, OUTCOME_PREFIX, RETRYABLE_REASONS, ConditionType, Reason
from ..api.finetunejob import (
    LOSS_HISTORY_POINTS,
    DeepSpeed,
    FineTuneJobSpec,
    FineTuneJobStatus,
    JobPhase,
    Outputs,
    Progress,
)
from ..api.redact import redact
from .capacity import PlanSettings, plan
from .evaluation import judge, measured_status, promotion
from .kueue import kueue_wait
from .models import guess
from .phases import job_phase_of, set_condition, timestamp, without_refusals
from .pods import pod_trouble
from .resolve import PlanError

MAX_BACKOFF_SECONDS = 3600
# Pod disruption reasons (DisruptionTarget condition) and what they mean for the gang.
DISRUPTIONS = {
    "PreemptionByScheduler": Reason.PREEMPTED,
    "PreemptionByKubeScheduler": Reason.PREEMPTED,
    "DeletionByTaintManager": Reason.NODE_LOST,
    "DeletionByPodGC": Reason.NODE_LOST,
    "TerminationByKubelet": Reason.NODE_LOST,
    "EvictionByEvictionAPI": Reason.EVICTED,
}


@dataclass(frozen=True)
class Observed:
    """What the controller saw of the current attempt."""

    job: dict[str, Any] | None = None
    pods: tuple[dict[str, Any], ...] = ()
    progress: dict[str, Any] | None = None  # rank 0's /progress, when it could be read
    # Why the Job controller could not create the pods (its newest FailedCreate event), when it has none.
    refusal: str | None = None
    # The spec the current attempt runs (its ConfigMap), read only when the spec changed since it started.
    attempt_spec: dict[str, Any] | None = None
    # Kueue's Workload of a suspended, queued attempt's Job: its conditions say why it waits (or was preempted).
    workload: dict[str, Any] | None = None


# Spec fields whose change needs no new pods: the operator applies them as it goes.
APPLIED_WITHOUT_RESTART = frozenset({"failurePolicy", "suspend", "serve", "activeDeadlineSeconds"})


def pod_changes(spec: FineTuneJobSpec, attempt_spec: dict[str, Any]) -> list[str]:
    """The spec.<field>s that differ from what the running attempt was started with and need new pods.
    (The fields that cannot change at all are refused at admission: CEL transition rules.)"""
    new = spec.to_wire()
    try:
        old = FineTuneJobSpec.model_validate(attempt_spec).to_wire()
    except ValueError:
        return ["spec"]
    return sorted(
        f"spec.{k}" for k in set(new) | set(old) if k not in APPLIED_WITHOUT_RESTART and new.get(k) != old.get(k)
    )


def _replanned(
    fields: list[str], spec: FineTuneJobSpec, planned: FineTuneJobSpec, attempt: dict[str, Any]
) -> list[str]:
    """`fields` as a person reads them: spec.distributed that differs only because `deepspeed: auto` was planned
    again (after an edit of spec.resources, say) is named as that, not as an edit of spec.distributed."""
    if "spec.distributed" not in fields or spec.distributed.deepspeed != DeepSpeed.AUTO:
        return fields
    old = dict(attempt.get("distributed") or {})
    new = planned.to_wire().get("distributed") or {}
    if {**old, "deepspeed": new.get("deepspeed")} != new:
        return fields  # something else in spec.distributed was edited too
    choice = f"the DeepSpeed preset planned for deepspeed: auto ({old.get('deepspeed')} -> {new.get('deepspeed')})"
    return [choice if f == "spec.distributed" else f for f in fields]


@dataclass
class Decision:
    status: FineTuneJobStatus  # the new status, validated against the model the CRD's schema comes from
    create_attempt: int | None = None
    delete_attempt: int | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (Normal|Warning, reason, message)

    @property
    def wire(self) -> dict[str, Any]:
        """The status as it is patched (camelCase, unset fields omitted)."""
        return self.status.to_wire()


@dataclass(frozen=True)
class Cause:
    reason: Reason | str
    message: str
    retryable: bool
    outcome: dict[str, Any] | None = None  # the launcher's termination message, when there is one


# How long past its deletion deadline a pod may still report Running before the next attempt stops waiting
# for it (its node is gone, and nobody will ever report it stopped).
STOPPING_MARGIN = timedelta(seconds=30)


def still_stopping(pods: tuple[dict[str, Any], ...], now: datetime, deleted_only: bool = False) -> list[str]:
    """Pods of a failed attempt that may still be running, e.g. saving a checkpoint after an eviction's or a
    `kubectl delete`'s SIGTERM: the next attempt starts once they are gone, so that it resumes from what they
    save and never writes the same run directory at the same time. A pod past its deletion deadline (plus a
    margin) on a node that no longer reports is not waited for."""
    names = []
    for pod in pods:
        if pod.get("status", {}).get("phase") not in ("Pending", "Running"):
            continue
        deadline = parse_time(pod.get("metadata", {}).get("deletionTimestamp"))
        if deadline is None and deleted_only:
            continue
        if deadline is None or now < deadline + STOPPING_MARGIN:
            names.append(pod.get("metadata", {}).get("name", "?"))
    return names


def _waits_for_stopping(b: _Builder, observed: Observed, attempt: int, starting: int, reason: Reason) -> bool:
    """Whether attempt `starting` must wait for pods of attempt `attempt` that are still stopping (said so).
    Recreating a lost attempt waits only for pods being deleted: orphans of a Job deleted with
    `--cascade=orphan` would never stop."""
    stopping = still_stopping(observed.pods, b.now, deleted_only=starting == attempt)
    if stopping:
        message = (f"attempt {starting} waits for attempt {attempt}'s pod(s) {', '.join(stopping)} to stop: a "
                   "stopped trainer saves a checkpoint within its grace period, and the next attempt resumes from "
                   "the newest one")  # fmt: skip
        b.condition(ConditionType.RUNNING, False, reason, message)
    return bool(stopping)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=None)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value


def _termination(pod: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(terminated state of the trainer container, parsed launcher outcome)."""
    for container in pod.get("status", {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            try:
                outcome = json.loads(terminated.get("message") or "")
            except (json.JSONDecodeError, TypeError):
                outcome = None
            # Whatever the pod wrote goes to conditions and Events: redacted here, once, for every reader.
            terminated = {**terminated, "message": redact(str(terminated.get("message") or ""))}
            if isinstance(outcome, dict):
                outcome = _redacted(outcome)
            return terminated, outcome if isinstance(outcome, dict) else None
    return None, None


def pod_failure_cause(pod: dict[str, Any]) -> Cause | None:
    """Why one pod failed, most specific evidence first; None when it did not fail."""
    status = pod.get("status", {})
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            reason = DISRUPTIONS.get(condition.get("reason", ""), Reason.EVICTED)
            return Cause(reason, f"pod {pod['metadata']['name']}: {condition.get('message') or reason}", True)
    if status.get("reason") in ("Evicted", "NodeLost", "Preempting", "Terminated"):
        reason = Reason.EVICTED if status["reason"] == "Evicted" else Reason.NODE_LOST
        return Cause(reason, f"pod {pod['metadata']['name']}: {status.get('message') or status['reason']}", True)
    if status.get("phase") != "Failed":
        return None
    terminated, outcome = _termination(pod)
    if terminated and terminated.get("reason") == "OOMKilled":
        return Cause(
            Reason.OOM_KILLED,
            f"pod {pod['metadata']['name']} ran out of host memory (OOMKilled); raise resources.memory",
            False,
        )
    if outcome:
        reason = outcome.get("reason", Reason.UNKNOWN)
        return Cause(reason, str(outcome.get("message", "")), bool(outcome.get("retryable")), outcome)
    code = terminated.get("exitCode") if terminated else None
    tail = (terminated or {}).get("message") or ""
    message = f"pod {pod['metadata']['name']} failed (exit code {code})" + (f": {tail[-300:]}" if tail else "")
    return Cause(Reason.UNKNOWN, message, Reason.UNKNOWN in RETRYABLE_REASONS)


# The Job controller's words when a rule of render/training.py's POD_FAILURE_POLICY failed the Job.
_POLICY_EXIT = re.compile(r"Container (?P<container>\S+) for pod (?P<pod>\S+) failed with exit code (?P<code>\d+)")
_POLICY_CONDITION = re.compile(r"Pod (?P<pod>\S+) has condition DisruptionTarget")


def job_failure_cause(failed: dict[str, Any]) -> Cause:
    """Why the Job failed, from its Failed condition alone: what is left when its pods are gone (deleted by
    `kubectl delete pod` or evicted, their termination messages with them)."""
    reason, message = failed.get("reason", ""), failed.get("message") or failed.get("reason", "")
    if reason == "DeadlineExceeded":
        return Cause(Reason.DEADLINE_EXCEEDED, message or "deadline exceeded", False)
    if reason == "PodFailurePolicy":
        if match := _POLICY_CONDITION.search(message):
            return Cause(Reason.EVICTED, f"pod {match['pod']} was disrupted (evicted, preempted or its node drained; "
                                         "it was given its grace period to save a checkpoint)", True)  # fmt: skip
        if (match := _POLICY_EXIT.search(message)) and int(match["code"]) == EXIT_RETRYABLE:
            return Cause(Reason.INTERRUPTED, f"pod {match['pod']} exited with the launcher's retryable code "
                                             f"{EXIT_RETRYABLE} (most often stopped by SIGTERM: deleted, or its node "
                                             "shut down) and is gone with its own report", True)  # fmt: skip
    return Cause(Reason.UNKNOWN, f"the Job failed: {message}", True)


def _job_condition(job: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for condition in (job or {}).get("status", {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def rank0_pod(pods: tuple[dict[str, Any], ...]) -> dict[str, Any] | None:
    """The pod that serves /progress: index 0 of the Indexed Job, or a RayJob's head (the driver runs there)."""
    for pod in pods:
        if pod.get("metadata", {}).get("labels", {}).get("modelforge.io/ray-node") == "head":
            return pod
    for pod in pods:
        if completion_index(pod) == "0":
            return pod
    return pods[0] if len(pods) == 1 else None


INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


def completion_index(pod: dict[str, Any]) -> str | None:
    """An Indexed Job pod's index (its node rank), from the label or, on older clusters, the annotation."""
    meta = pod.get("metadata", {})
    return (meta.get("labels") or {}).get(INDEX_LABEL) or (meta.get("annotations") or {}).get(INDEX_LABEL)


def progress_status(progress: dict[str, Any] | None) -> dict[str, Any] | None:
    """The launcher's /progress JSON as status.progress (camelCase, known fields only)."""
    if not progress:
        return None
    mapping = {
        "step": "step", "total_steps": "totalSteps", "percent": "percent", "summary": "summary",
        "epoch": "epoch", "loss": "loss", "eval_loss": "evalLoss", "learning_rate": "learningRate",
        "tokens_per_second": "tokensPerSecond", "eta": "eta", "updated_at": "updatedAt",
        "last_step": "step", "resumed_from": "resumedFrom",
    }  # fmt: skip
    out = {mapping[k]: v for k, v in progress.items() if k in mapping and Progress.field_fits(mapping[k], v)}
    history = loss_history(progress.get("loss_history"))
    if history:
        out["lossHistory"] = history
    return out or None


def loss_history(value: Any) -> list[float] | None:
    """The launcher's loss_history as status.progress.lossHistory: None unless it is a list of numbers;
    the finite ones, downsampled to LOSS_HISTORY_POINTS should a launcher send more."""
    if not isinstance(value, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return None
    return downsample([float(v) for v in value if math.isfinite(v)])


def downsample(values: list[float], points: int = LOSS_HISTORY_POINTS) -> list[float]:
    """At most `points` values: the means of equal-width buckets of consecutive values, in order (all of
    them when there are no more), each rounded to 4 significant digits."""
    n = len(values)
    if n <= points:
        buckets = [values[i : i + 1] for i in range(n)]
    else:
        bounds = [i * n // points for i in range(points + 1)]
        buckets = [values[bounds[i] : bounds[i + 1]] for i in range(points)]
    return [float(f"{sum(bucket) / len(bucket):.4g}") for bucket in buckets]


def is_rayjob(job: dict[str, Any] | None) -> bool:
    return (job or {}).get("kind") == "RayJob"


def ray_outcome(message: str) -> dict[str, Any] | None:
    """The launcher's outcome in a RayJob's status.message (the tail of the driver's log), when it is there."""
    at = message.rfind(OUTCOME_PREFIX)
    if at < 0:
        return None
    line = (message[at + len(OUTCOME_PREFIX) :].splitlines() or [""])[0]
    try:
        outcome = json.loads(line)
    except ValueError:
        return None  # cut off by KubeRay's or Ray's truncation
    return outcome if isinstance(outcome, dict) else None


def ray_cause(job: dict[str, Any]) -> Cause | None:
    """Why a RayJob's attempt failed; None while it has not. The launcher's own outcome decides when the
    message carries it; otherwise KubeRay's reason (DeadlineExceeded, ValidationFailed are permanent)."""
    status = job.get("status") or {}
    deployment, state = status.get("jobDeploymentStatus"), status.get("jobStatus")
    if deployment not in ("Failed", "ValidationFailed") and state not in ("FAILED", "STOPPED"):
        return None
    message = str(status.get("message") or "")
    outcome = ray_outcome(message)
    if outcome:
        reason = outcome.get("reason", Reason.UNKNOWN)
        return Cause(reason, str(outcome.get("message", "")), bool(outcome.get("retryable")), outcome)
    reason = status.get("reason") or ""
    said = message.strip().splitlines()[-1][:300] if message.strip() else f"job {state or 'not started'}"
    if deployment == "ValidationFailed" or reason == "ValidationFailed":
        return Cause(Reason.CONFIG_ERROR, f"KubeRay refused the RayJob: {said}", False)
    if reason == "DeadlineExceeded":
        return Cause(Reason.DEADLINE_EXCEEDED, f"the RayJob ran past its deadline: {said}", False)
    return Cause(Reason.UNKNOWN, f"the RayJob failed ({reason or state or deployment}): {said}", True)


RAY_STARTING = {
    None: "KubeRay has not picked the RayJob up yet (is the KubeRay operator running?)",
    "New": "KubeRay has not picked the RayJob up yet (is the KubeRay operator running?)",
    "Initializing": "KubeRay is starting the Ray cluster",
    "Waiting": "the Ray cluster is waiting for the job to be submitted",
    "Running": "the Ray cluster is up; the training job is being submitted",
    "Retrying": "KubeRay is retrying the Ray job",
}


class _Builder:
    """Accumulates the new status and side effects while `decide` walks the lifecycle.

    `decide` only sets conditions; `phase` is derived from them once, in `done` (see plan/phases.py), and
    is never read back to decide anything.
    """

    def __init__(self, status: dict[str, Any], now: datetime):
        self.status = json.loads(json.dumps(status))  # a deep copy we can edit
        if self.status.get("conditions"):
            self.status["conditions"] = without_refusals(self.status["conditions"])
        self.now = now
        self.create_attempt: int | None = None
        self.delete_attempt: int | None = None
        self._old_phase = job_phase_of(status)
        self._old_reasons = {c.get("type"): c.get("reason") for c in status.get("conditions") or []}
        self._event: tuple[str, str, bool] | None = None
        self._warnings: list[tuple[str, str, str]] = []

    @property
    def current(self) -> JobPhase:
        return job_phase_of(self.status)

    def condition(self, kind: ConditionType, ok: bool, reason: Reason | str, message: str) -> None:
        self.status["conditions"] = set_condition(self.status.get("conditions") or [], kind, ok, reason, message,
                                                  self.now, self.status.get("observedGeneration"))  # fmt: skip

    def announce(self, reason: Reason | str, message: str, warning: bool = False) -> None:
        """The event for this step: posted when the derived phase changes, or a warning has a new reason."""
        self._event = (str(reason), message, warning)

    def said(self, kind: ConditionType) -> dict[str, Any]:
        """The condition of that type as it stands now ({} when there is none)."""
        return next((c for c in self.status.get("conditions") or [] if c.get("type") == kind), {})

    def drop(self, kind: ConditionType) -> None:
        self.status["conditions"] = [c for c in self.status.get("conditions") or [] if c.get("type") != kind]

    def warn(self, kind: ConditionType, reason: Reason, message: str, level: str = "Warning") -> None:
        """An event about `kind` besides the step's event (a warning unless `level` says Normal): posted once,
        when that condition takes this reason."""
        if self._old_reasons.get(kind.value) != reason:
            self._warnings.append((level, str(reason), message))

    def done(self) -> Decision:
        phase = self.current
        self.status["phase"] = phase.value
        if phase != JobPhase.RUNNING:  # a statement about a running attempt's reports
            self.drop(ConditionType.PROGRESS_REPORTED)
        events = []
        if self._event is not None:
            reason, message, warning = self._event
            new_warning = warning and self._old_reasons.get(ConditionType.RUNNING.value) != reason
            if self._old_phase != phase or new_warning:
                events.append(("Warning" if warning else "Normal", reason, message))
        events += self._warnings
        return Decision(FineTuneJobStatus.model_validate(self.status), self.create_attempt, self.delete_attempt,
                        events)  # fmt: skip


def _validated(b: _Builder, spec: FineTuneJobSpec | None, problems: list[str], settings: PlanSettings) -> bool:
    if spec is None or problems:
        message = "; ".join(problems) or "the spec could not be read"
        b.condition(ConditionType.VALIDATED, False, Reason.INVALID_SPEC, message)
        b.condition(ConditionType.FAILED, True, Reason.INVALID_SPEC, message)
        b.status["completionTime"] = b.status.get("completionTime") or timestamp(b.now)
        b.announce(Reason.INVALID_SPEC, message, warning=True)
        return False
    if spec.output is None:
        problems = ["spec.output: required on a cluster: checkpoints and results need a PersistentVolumeClaim "
                    "(e.g. output: {claimName: models})"]  # fmt: skip
        return _validated(b, None, problems, settings)
    try:
        arch, how = guess(spec.model.source)
        planned = plan(spec, arch, settings, why_unknown=how)
    except PlanError as exc:
        b.condition(ConditionType.VALIDATED, False, Reason.INVALID_SPEC, str(exc))
        b.condition(ConditionType.FAILED, True, Reason.INVALID_SPEC, str(exc))
        b.status["completionTime"] = b.status.get("completionTime") or timestamp(b.now)
        b.announce(Reason.INVALID_SPEC, str(exc), warning=True)
        return False
    b.status["gpus"] = planned.resolved.world_size
    status_plan = planned.status()
    if arch is not None and how:
        status_plan["notes"] = [how, *(status_plan.get("notes") or [])][:32]  # type: ignore[misc]
    b.status["plan"] = status_plan
    if planned.fits is False:
        message = f"{planned.verdict}" + (f". {planned.fixes[0]}" if planned.fixes else "")
        b.condition(ConditionType.VALIDATED, False, Reason.INSUFFICIENT_GPU_MEMORY, message)
        b.condition(ConditionType.FAILED, True, Reason.INSUFFICIENT_GPU_MEMORY, message)
        b.status["completionTime"] = b.status.get("completionTime") or timestamp(b.now)
        b.announce(Reason.INSUFFICIENT_GPU_MEMORY, message, warning=True)
        return False
    summary = planned.verdict or (planned.notes[0] if planned.notes else "")
    b.condition(ConditionType.VALIDATED, True, Reason.SPEC_VALID, f"the spec is valid; {summary}"[:1000])
    return True


def with_planned_deepspeed(spec: FineTuneJobSpec, status_plan: dict[str, Any] | None) -> FineTuneJobSpec:
    """The spec the pods get: `deepspeed: auto` replaced by the planner's choice, so they run what was planned."""
    chosen = (status_plan or {}).get("deepspeed")
    if spec.distributed.deepspeed != DeepSpeed.AUTO or not chosen:
        return spec
    distributed = spec.distributed.model_copy(update={"deepspeed": DeepSpeed(chosen)})
    return spec.model_copy(update={"distributed": distributed})


def spec_for_pods(spec: FineTuneJobSpec, settings: PlanSettings | None = None) -> FineTuneJobSpec:
    """The spec as a pod (or `modelforge run`) runs it: `deepspeed: auto` resolved by the same planner call
    the operator makes, so local mode and the cluster run the same preset. Raises PlanError."""
    arch, how = guess(spec.model.source)
    return with_planned_deepspeed(spec, plan(spec, arch, settings, why_unknown=how).status())


def _fail(b: _Builder, reason: Reason | str, message: str) -> None:
    b.condition(ConditionType.RUNNING, False, reason, message)
    b.condition(ConditionType.FAILED, True, reason, message)
    b.status["completionTime"] = timestamp(b.now)
    b.announce(reason, message, warning=True)


# status.outputs' fields as the launcher writes them (camelCase, as status says them); anything else a launcher
# of another version (or a user's own image) writes is dropped, never copied into a status that the API model
# would then refuse on every reconcile.
OUTPUT_KEYS = frozenset(field.alias or name for name, field in Outputs.model_fields.items())


def _path_like(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 1024


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _record_outcome(b: _Builder, outcome: dict[str, Any] | None) -> None:
    """The launcher's outcome into status: only the fields and types this operator knows (an outcome of
    another launcher version, extra keys, wrong types or garbage, keeps the rest and never breaks a reconcile)."""
    if not outcome:
        return
    if _path_like(outcome.get("last_checkpoint")):
        b.status["latestCheckpoint"] = outcome["last_checkpoint"]
    outputs = outcome.get("outputs")
    if isinstance(outputs, dict):
        known = {k: v for k, v in outputs.items() if k in OUTPUT_KEYS and _path_like(v)}
        if known:
            b.status["outputs"] = known
    if not _count(outcome.get("total_steps")):
        outcome = {k: v for k, v in outcome.items() if k != "total_steps"}
    if _count(outcome.get("last_step")):
        progress = dict(b.status.get("progress") or {})
        progress["step"] = outcome["last_step"]
        if outcome.get("total_steps"):
            progress["totalSteps"] = outcome["total_steps"]
            # At most 100: a run resumed from a checkpoint saved on SIGTERM can report a step past the total.
            progress["percent"] = min(100.0, round(100.0 * outcome["last_step"] / outcome["total_steps"], 1))
            progress["summary"] = f"{outcome['last_step']}/{outcome['total_steps']} ({progress['percent']:.0f}%)"
        b.status["progress"] = progress


def _start_attempt(b: _Builder, spec: FineTuneJobSpec, attempt: int) -> None:
    b.status["attempt"] = attempt
    if b.status.get("observedGeneration") is not None:
        b.status["attemptGeneration"] = b.status["observedGeneration"]
    b.status.pop("nextAttemptTime", None)
    b.create_attempt = attempt
    b.status.setdefault("startTime", timestamp(b.now))
    queued = bool(spec.scheduling and spec.scheduling.queue_name)
    message = f"attempt {attempt}: creating {spec.resources.nodes} pod(s) x {spec.resources.gpus_per_node} GPU(s)"
    if attempt > 1:
        message += ", resuming from the newest checkpoint"
    b.condition(ConditionType.RUNNING, False, Reason.STARTING, message)
    if queued:
        queue = spec.scheduling.queue_name if spec.scheduling else "?"
        b.condition(ConditionType.ADMITTED, False, Reason.QUEUED, f"waiting for Kueue to admit it (queue {queue})")
    b.announce(Reason.STARTING, message)


def _completed(b: _Builder, spec: FineTuneJobSpec, attempt: int, outcome: dict[str, Any] | None) -> None:
    _record_outcome(b, outcome)
    message = (outcome or {}).get("message") or f"attempt {attempt} completed"
    if not isinstance(message, str):
        message = f"attempt {attempt} completed"
    b.condition(ConditionType.RUNNING, False, Reason.COMPLETED, message[:1024])
    b.condition(ConditionType.SUCCEEDED, True, Reason.COMPLETED, message[:1024])
    b.status["completionTime"] = timestamp(b.now)
    b.announce(Reason.COMPLETED, message[:1024])
    _promotion(b, spec, (outcome or {}).get("evaluation"))


def _promotion(b: _Builder, spec: FineTuneJobSpec, reported: Any) -> None:
    """With spec.evaluation: the launcher's scores judged against the spec's gate (plan/evaluation.py) into
    status.evaluation, and the condition Promoted that spec.serve and fromFineTuneJob wait for."""
    if spec.evaluation is None:
        return
    measured = measured_status(reported)
    judged = judge(spec.evaluation, measured) if measured is not None else None
    if judged is not None:
        b.status["evaluation"] = judged.to_wire()
    decided = promotion(spec.evaluation, judged)
    if decided is None:
        return
    promoted, reason, message = decided
    b.condition(ConditionType.PROMOTED, promoted, reason, message)
    b.warn(ConditionType.PROMOTED, reason, message, "Normal" if promoted else "Warning")


def _failed_attempt(
    b: _Builder, spec: FineTuneJobSpec, cause: Cause, attempt: int, restarts: int, stopped: bool = False
) -> None:
    """The attempt failed: a new one after the backoff when the cause is retryable and restarts are left."""
    now = b.now
    _record_outcome(b, cause.outcome)
    # A next attempt replaces this one. A final failure keeps it once it has stopped (torchrun): the Job has
    # failed (the Job controller stops its other pods) or every pod has ended, and the failed ones keep their
    # logs for `kubectl logs` and `modelforge logs` until the FineTuneJob is deleted. A cause seen while ranks
    # still run (a node lost, a disruption, one rank of several) may leave them on GPUs, and a RayJob's Ray
    # cluster would keep running: deleted.
    if (cause.retryable and restarts < spec.failure_policy.max_restarts) or not stopped:
        b.delete_attempt = attempt
    if cause.retryable and restarts < spec.failure_policy.max_restarts:
        delay = min(MAX_BACKOFF_SECONDS, spec.failure_policy.backoff_seconds * 2**restarts)
        b.status["restarts"] = restarts + 1
        b.status["nextAttemptTime"] = timestamp(now + timedelta(seconds=delay))
        checkpoint = b.status.get("latestCheckpoint")
        resume = f" from {checkpoint}" if checkpoint else ""
        if checkpoint and cause.outcome is None:  # the pod's own report is gone: it may have saved a newer one
            resume = f" from the newest checkpoint (the last reported: {checkpoint})"
        message = (
            f"attempt {attempt} failed ({cause.reason}: {cause.message}); attempt {attempt + 1} "
            f"starts in {delay} s{resume} (restart {restarts + 1} of {spec.failure_policy.max_restarts})"
        )
        b.condition(ConditionType.RUNNING, False, Reason.RESTARTING, message)
        b.announce(Reason.RESTARTING, message, warning=True)
    elif cause.retryable:
        _fail(b, Reason.RESTART_LIMIT_EXCEEDED,
              f"attempt {attempt} failed ({cause.reason}: {cause.message}) and all "
              f"{spec.failure_policy.max_restarts} restarts are used")  # fmt: skip
    else:
        _fail(b, cause.reason, cause.message)


def _read_in_this_attempt(b: _Builder) -> datetime | None:
    """When the operator last read rank 0's /progress in this attempt: status.progress.readAt, if it is not older
    than the moment every pod of this attempt ran (Running turned True; before that, now). None: not yet."""
    running = b.said(ConditionType.RUNNING)
    began = parse_time(running.get("lastTransitionTime")) if running.get("status") == "True" else b.now
    read = parse_time((b.status.get("progress") or {}).get("readAt"))
    return read if read and began and read >= began else None


def _progress_reported(b: _Builder, spec: FineTuneJobSpec, observed: Observed, read: datetime | None) -> None:
    """ProgressReported=False (and one Warning event) once rank 0's /progress, having answered in this attempt
    (last `read`), has not answered for longer than failurePolicy.stallTimeoutSeconds while every pod runs; True
    again when it answers. Counted from the operator's last successful read (status.progress.readAt), so a
    launcher busy in a long evaluation still counts as answering, and nothing is said before its first answer
    (the launcher serves /progress only after its pre-flight, which may download a model: the Running condition
    says "no progress reported yet"). The launcher's own watchdog fails a rank whose steps stop; this is the
    operator's view: a launcher it can no longer reach (a NetworkPolicy, a hung process) may be training unseen,
    or not at all."""
    warned = b.said(ConditionType.PROGRESS_REPORTED).get("status") == "False"
    if observed.progress is not None:
        if warned:
            step = observed.progress.get("step", observed.progress.get("last_step"))
            again = "rank 0's /progress answers again" + (f" (step {step})" if step is not None else "")
            b.condition(ConditionType.PROGRESS_REPORTED, True, Reason.PROGRESS_RESUMED, again)
        return
    timeout = spec.failure_policy.stall_timeout_seconds
    # readAt may lag the last answer by up to the refresh period (an unchanged report is re-recorded that
    # often): counting from it plus that period never warns early.
    if not (timeout and read and (b.now - read).total_seconds() > timeout + _read_at_refresh(timeout)):
        if warned:  # the timeout was raised or turned off (0) since: nothing to warn about any more
            b.drop(ConditionType.PROGRESS_REPORTED)
        return
    progress = b.status.get("progress") or {}
    last = progress.get("summary") or (f"step {progress['step']}" if progress.get("step") is not None else "none")
    message = (
        f"rank 0's /progress has been silent for longer than failurePolicy.stallTimeoutSeconds ({timeout} s) (its "
        f"last answer recorded at {progress['readAt']}); its last report: {last}. The training may go on unseen: "
        "check rank 0's log (modelforge logs JOB) and that the operator can reach the pod's progress port (8090 "
        "by default; a NetworkPolicy?)"
    )
    b.condition(ConditionType.PROGRESS_REPORTED, False, Reason.NO_PROGRESS_REPORT, message)
    b.warn(ConditionType.PROGRESS_REPORTED, Reason.NO_PROGRESS_REPORT, message)


# An unchanged report (a long evaluation, steps slower than the poll) re-records readAt at most this often (a
# quarter of the stall timeout when that is shorter), so a quiet job costs no status write per poll; the stall
# warning counts that period on top of the timeout.
READ_AT_REFRESH_SECONDS = 60


def _read_at_refresh(stall_timeout: int) -> float:
    return min(READ_AT_REFRESH_SECONDS, stall_timeout / 4) if stall_timeout else READ_AT_REFRESH_SECONDS


def _read_at(b: _Builder, progress: dict[str, Any], stall_timeout: int) -> str:
    """status.progress.readAt for a report read now: now, or the stored one while the report is unchanged
    and the stored one is recent enough."""
    before = dict(b.status.get("progress") or {})
    stored = before.pop("readAt", None)
    read = parse_time(stored)
    if before == progress and read and 0 <= (b.now - read).total_seconds() < _read_at_refresh(stall_timeout):
        return str(stored)
    return timestamp(b.now)


def _training(b: _Builder, spec: FineTuneJobSpec, observed: Observed, message: str, event: str) -> None:
    """Every rank runs: Running, with rank 0's (or the Ray head's) progress when it could be read."""
    progress = progress_status(observed.progress)
    if progress:
        b.status["progress"] = {**progress, "readAt": _read_at(b, progress, spec.failure_policy.stall_timeout_seconds)}
    checkpoint = (observed.progress or {}).get("latest_checkpoint")
    if isinstance(checkpoint, str) and checkpoint:
        b.status["latestCheckpoint"] = checkpoint  # the newest whole one, while training (not only at the end)
    read = _read_in_this_attempt(b)
    summary = (progress or {}).get("summary")
    if observed.progress is None:  # never claim training nobody has seen: say what this attempt (not) reported
        before = (b.status.get("progress") or {}).get("summary") if read else None
        summary = (f"rank 0's /progress did not answer this time (last reported: {before})" if before
                   else "pods running, no progress reported yet (rank 0's /progress has not answered)")  # fmt: skip
    b.condition(ConditionType.RUNNING, True, Reason.TRAINING, message + (f", {summary}" if summary else ""))
    _progress_reported(b, spec, observed, read)
    b.announce(Reason.TRAINING, event)


def _queued(b: _Builder, spec: FineTuneJobSpec, observed: Observed, attempt: int) -> Decision:
    """The attempt's Job is suspended: Kueue has not admitted it yet, or took it back (preempted it). The
    Admitted condition carries Kueue's own reason and message (plan/kueue.py); the operator never unsuspends."""
    queue = spec.scheduling.queue_name if spec.scheduling else "?"
    wait = kueue_wait(observed.workload)
    reason, message = (wait.reason, wait.message) if wait else (Reason.QUEUED, f"waiting for Kueue to admit it "
                                                                                f"(queue {queue})")  # fmt: skip
    if b.said(ConditionType.ADMITTED).get("status") == "True":
        # It was admitted and is suspended again: Kueue took it back. Its trainers got SIGTERM and save a
        # checkpoint at the step they reached; readmitted, the Job's new pods resume from it. Not a restart.
        b.status["preemptions"] = int(b.status.get("preemptions") or 0) + 1
        if wait is None:
            reason, message = Reason.PREEMPTED, f"stopped by Kueue (queue {queue}); it waits to be admitted again"
    b.condition(ConditionType.ADMITTED, False, reason, message)
    if _job_condition(observed.job, "Failed") or _job_condition(observed.job, "FailureTarget"):
        # The Job controller failed the Job while Kueue was stopping it: a trainer's exit on its SIGTERM (75,
        # retryable: checkpoint saved) matched the pod failure policy before its pod was gone (a race the Job
        # controller has with a suspend). Kueue lets go of a finished Job, so the next attempt queues again and
        # resumes from that checkpoint: a preemption still, not a failure nor a restart.
        b.delete_attempt = attempt
        b.status["nextAttemptTime"] = timestamp(b.now)
        b.condition(
            ConditionType.RUNNING,
            False,
            Reason.RESTARTING,
            f"{message[:700]}; attempt {attempt + 1} queues again and resumes from the newest checkpoint",
        )
        b.announce(reason, message)
        return b.done()
    # Not Running any more if it ran: Queued until Kueue admits it (again).
    b.condition(ConditionType.RUNNING, False, reason, message)
    b.announce(reason, message)
    return b.done()


def _ray_attempt(b: _Builder, spec: FineTuneJobSpec, observed: Observed, attempt: int, restarts: int) -> Decision:
    """A running `distributed.runtime: ray` attempt, from its RayJob's status (KubeRay's words) and pods."""
    job = observed.job or {}
    status = job.get("status") or {}
    deployment, state = status.get("jobDeploymentStatus"), status.get("jobStatus")
    if deployment == "Complete" and state == "SUCCEEDED":
        _completed(b, spec, attempt, ray_outcome(str(status.get("message") or "")))
        return b.done()
    cause = ray_cause(job)
    if cause is not None:
        _failed_attempt(b, spec, cause, attempt, restarts)
        return b.done()
    problem = pod_trouble(observed.pods)
    if problem:
        b.condition(ConditionType.RUNNING, False, problem[0], problem[1])
        b.announce(problem[0], problem[1], warning=True)
    elif deployment == "Running" and state == "RUNNING":
        _training(b, spec, observed, f"attempt {attempt}: training (Ray job running)",
                  f"attempt {attempt}: the Ray job is running on {spec.resources.nodes} worker pod(s)")  # fmt: skip
    else:
        said = RAY_STARTING.get(deployment, f"RayJob {deployment}, job {state or 'not submitted yet'}")
        message = f"attempt {attempt}: {said}"
        b.condition(ConditionType.RUNNING, False, Reason.STARTING, message)
        b.announce(Reason.STARTING, message)
    return b.done()


@dataclass
class _Attempt:
    """What every step of a reconcile reads: the status being built, the spec, what was observed."""

    b: _Builder
    spec: FineTuneJobSpec
    observed: Observed
    phase: JobPhase  # as the stored conditions say, before this reconcile
    attempt: int
    restarts: int
    generation: int | None


def decide(
    spec: FineTuneJobSpec | None,
    problems: list[str],
    current: FineTuneJobStatus | Mapping[str, Any],
    observed: Observed,
    now: datetime,
    generation: int | None = None,
    settings: PlanSettings | None = None,
) -> Decision:
    """The next step for one FineTuneJob. Idempotent: the same inputs give the same decision.

    `current` is the object's status (typed, or as read from the API server); where the job stands is
    read from its conditions, never from `phase`. A finished job stays finished; then the spec is validated
    (and planned); then STEPS, in order: the first that decides ends the reconcile."""
    if not isinstance(current, FineTuneJobStatus):
        current = FineTuneJobStatus.model_validate(dict(current))
    status = current.to_wire()
    b = _Builder(status, now)
    phase = job_phase_of(status)
    if generation is not None:
        b.status["observedGeneration"] = generation
    if phase in (JobPhase.SUCCEEDED, JobPhase.FAILED):
        refused = phase == JobPhase.FAILED and not status.get("attempt")
        changed = generation is not None and status.get("observedGeneration") not in (None, generation)
        if not (refused and changed):
            return b.done()
        # Refused before any pod (invalid or too big) and the spec changed since: judge it again.
        b.status["conditions"] = [c for c in b.status.get("conditions") or [] if c.get("type") != "Failed"]
        b.status.pop("completionTime", None)
    if not _validated(b, spec, problems, settings or PlanSettings()) or spec is None:
        if status.get("attempt") and phase not in (JobPhase.SUCCEEDED, JobPhase.FAILED):
            b.delete_attempt = int(status["attempt"])  # refused mid-run (an edit): its pods must not keep GPUs
        return b.done()
    a = _Attempt(b, spec, observed, phase, int(status.get("attempt") or 0), int(status.get("restarts") or 0),
                 generation)  # fmt: skip
    for step in STEPS:
        decision = step(a)
        if decision is not None:
            return decision
    return _observe_pods(a)


def _past_deadline(a: _Attempt) -> Decision | None:
    started, deadline = parse_time(a.b.status.get("startTime")), a.spec.active_deadline_seconds
    if not (deadline and started and a.b.now - started > timedelta(seconds=deadline)):
        return None
    a.b.delete_attempt = a.attempt or None
    _fail(a.b, Reason.DEADLINE_EXCEEDED, f"the job ran longer than activeDeadlineSeconds ({deadline} s)")
    return a.b.done()


def _suspended_by_spec(a: _Attempt) -> Decision | None:
    """spec.suspend: the attempt is stopped; unsuspended, the next one starts once its pods are gone."""
    b = a.b
    if a.spec.suspend:
        if a.observed.job is not None or a.observed.pods:
            b.delete_attempt = a.attempt
        message = "suspended: the attempt was stopped; checkpoints and outputs are kept"
        b.condition(ConditionType.SUSPENDED, True, Reason.SUSPENDED, message)
        b.condition(ConditionType.RUNNING, False, Reason.SUSPENDED, message)
        b.announce(Reason.SUSPENDED, message)
        return b.done()
    if a.phase != JobPhase.SUSPENDED:
        return None
    if _waits_for_stopping(b, a.observed, a.attempt, a.attempt + 1, Reason.SUSPENDED):
        return b.done()
    b.condition(ConditionType.SUSPENDED, False, Reason.STARTING, "resumed")
    _start_attempt(b, a.spec, a.attempt + 1)
    return b.done()


def _first_attempt(a: _Attempt) -> Decision | None:
    if a.attempt != 0:
        return None
    _start_attempt(a.b, a.spec, 1)
    return a.b.done()


def _restart_when_due(a: _Attempt) -> Decision | None:
    """Restarting: after the backoff, once the old attempt's Job and pods are gone, the next attempt."""
    if a.phase != JobPhase.RESTARTING:
        return None
    b = a.b
    next_time = parse_time(b.status.get("nextAttemptTime"))
    if next_time and b.now < next_time:
        return b.done()
    if a.observed.job is not None:
        b.delete_attempt = a.attempt  # the old attempt is still being torn down
        return b.done()
    if _waits_for_stopping(b, a.observed, a.attempt, a.attempt + 1, Reason.RESTARTING):
        return b.done()
    _start_attempt(b, a.spec, a.attempt + 1)
    return b.done()


def _recreate_a_lost_job(a: _Attempt) -> Decision | None:
    if a.observed.job is not None:
        return None
    if not _waits_for_stopping(a.b, a.observed, a.attempt, a.attempt, Reason.STARTING):
        # A Job deleted by hand (its pods, same labels, may still be saving: waited for above), or never created
        # (operator restart): recreate, same name.
        a.b.create_attempt = a.attempt
    return a.b.done()


def _apply_a_spec_edit(a: _Attempt) -> Decision | None:
    """A spec edit the pods see replaces the attempt (not counted as a restart); one they do not see is taken
    by the running attempt."""
    if a.observed.attempt_spec is None:
        return None
    b, spec, attempt = a.b, a.spec, a.attempt
    # Compared as the pods got it: `deepspeed: auto` resolved by the plan, as in the attempt's ConfigMap.
    planned = with_planned_deepspeed(spec, b.status.get("plan"))
    pod_fields = pod_changes(planned, a.observed.attempt_spec)
    if not pod_fields:
        if a.generation is not None:
            b.status["attemptGeneration"] = a.generation  # nothing the pods see changed
        return None
    # Never ignore an edit silently: the next attempt resumes from the newest checkpoint with the new spec.
    fields = ", ".join(_replanned(pod_fields, spec, planned, a.observed.attempt_spec))
    message = (f"{fields} changed: stopping attempt {attempt}; attempt {attempt + 1} applies it, "
               "resuming from the newest checkpoint")  # fmt: skip
    b.delete_attempt = attempt
    b.status["nextAttemptTime"] = timestamp(b.now)
    b.condition(ConditionType.RUNNING, False, Reason.SPEC_CHANGED, message)
    b.announce(Reason.SPEC_CHANGED, message)
    return b.done()


def _admission(a: _Attempt) -> Decision | None:
    """A suspended Job waits for Kueue (or was preempted by it); an unsuspended one of a queue was admitted."""
    if (a.observed.job or {}).get("spec", {}).get("suspend"):
        return _queued(a.b, a.spec, a.observed, a.attempt)
    if a.spec.scheduling and a.spec.scheduling.queue_name:
        a.b.condition(ConditionType.ADMITTED, True, Reason.ADMITTED, "admitted by Kueue")
    return None


def _ray(a: _Attempt) -> Decision | None:
    return _ray_attempt(a.b, a.spec, a.observed, a.attempt, a.restarts) if is_rayjob(a.observed.job) else None


def _completed_attempt(a: _Attempt) -> Decision | None:
    pods, nodes = a.observed.pods, a.spec.resources.nodes
    if not (_job_condition(a.observed.job, "Complete") or (
        pods and len(pods) >= nodes and all(p.get("status", {}).get("phase") == "Succeeded" for p in pods)
    )):  # fmt: skip
        return None
    rank0 = rank0_pod(pods)
    _, outcome = _termination(rank0) if rank0 else (None, None)
    _completed(a.b, a.spec, a.attempt, outcome)
    return a.b.done()


def _classify_failures(a: _Attempt) -> Decision | None:
    pods = a.observed.pods
    causes = [c for c in (pod_failure_cause(p) for p in pods) if c is not None]
    # FailureTarget: the Job controller's decision (since Kubernetes 1.31), before Failed, which waits for every
    # pod to stop; a deleted pod can be gone while only FailureTarget is set.
    job_failed = _job_condition(a.observed.job, "Failed") or _job_condition(a.observed.job, "FailureTarget")
    if job_failed and not causes:
        causes.append(job_failure_cause(job_failed))
    if not causes:
        return None
    # A permanent cause anywhere decides; otherwise the first retryable one.
    cause = next((c for c in causes if not c.retryable), causes[0])
    # Stopped: the Job controller has failed the Job, or (it syncs a second after a pod changes) every pod
    # of the gang has ended and none is being deleted: nothing of it holds a GPU any more.
    ended = len(pods) >= a.spec.resources.nodes and all(
        p.get("status", {}).get("phase") in ("Succeeded", "Failed") and not p["metadata"].get("deletionTimestamp")
        for p in pods
    )
    _failed_attempt(a.b, a.spec, cause, a.attempt, a.restarts, stopped=job_failed is not None or ended)
    return a.b.done()


def _observe_pods(a: _Attempt) -> Decision:
    """The attempt runs: training once every pod runs (progress from rank 0), else starting, or what is wrong."""
    b, pods, nodes, attempt = a.b, a.observed.pods, a.spec.resources.nodes, a.attempt
    problem = pod_trouble(pods)
    if not pods and a.observed.refusal:
        problem = (Reason.PODS_REFUSED, f"the API server refused the pods: {a.observed.refusal}")
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    if problem:
        b.condition(ConditionType.RUNNING, False, problem[0], problem[1])
        b.announce(problem[0], problem[1], warning=True)
    elif pods and len(running) >= nodes:
        _training(
            b, a.spec, a.observed, f"attempt {attempt}: training", f"attempt {attempt}: all {nodes} pod(s) running"
        )
    else:
        message = f"attempt {attempt}: {len(running)}/{nodes} pod(s) running"
        b.condition(ConditionType.RUNNING, False, Reason.STARTING, message)
        b.announce(Reason.STARTING, message)
    return b.done()


# One FineTuneJob reconcile, after validation: the first step that decides ends it (_observe_pods if none).
STEPS: tuple[Callable[[_Attempt], Decision | None], ...] = (
    _past_deadline,
    _suspended_by_spec,
    _first_attempt,
    _restart_when_due,
    _recreate_a_lost_job,
    _apply_a_spec_edit,
    _admission,
    _ray,
    _completed_attempt,
    _classify_failures,
)
