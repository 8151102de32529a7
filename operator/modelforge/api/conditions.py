"""Condition types and reasons: the one place they are spelled, so status, events and tests agree.

A condition's `reason` is a CamelCase machine-readable word; its `message` is the sentence for a person.
`phase` is derived from the conditions for `kubectl get`.
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    # FineTuneJob
    VALIDATED = "Validated"
    ADMITTED = "Admitted"
    RUNNING = "Running"
    # False while rank 0's /progress has not answered for longer than failurePolicy.stallTimeoutSeconds (a
    # warning: the training may go on unseen); True again once it answers. Only while an attempt runs.
    PROGRESS_REPORTED = "ProgressReported"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    # With spec.evaluation, once the job succeeded: True when its output may be served (the gate passed, or
    # there is no gate), False when the evaluation failed its gate or could not run. Not part of the phase.
    PROMOTED = "Promoted"
    # ModelServe
    MODEL_AVAILABLE = "ModelAvailable"
    READY = "Ready"
    DEGRADED = "Degraded"
    # Both: False while the API server refuses a write of the operator (its words); gone once one gets through.
    # Not part of either kind's phase (a refusal says nothing of what training or serving did).
    CHILDREN_APPLIED = "ChildrenApplied"


class Reason(StrEnum):
    # Validation and planning (before any GPU is requested)
    SPEC_VALID = "SpecValid"
    INVALID_SPEC = "InvalidSpec"
    INSUFFICIENT_GPU_MEMORY = "InsufficientGPUMemory"
    NOT_PLANNED = "NotPlanned"
    # Admission and scheduling
    QUEUED = "Queued"
    ADMITTED = "Admitted"
    UNSCHEDULABLE = "Unschedulable"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    PODS_REFUSED = "PodsRefused"  # the API server refused the Job's pods (ResourceQuota, PodSecurity, ...)
    CHILD_REFUSED = "ChildRefused"  # the API server refused an object the operator writes (its words in the message)
    # Running
    STARTING = "Starting"
    TRAINING = "Training"
    MERGING = "Merging"
    RESTARTING = "Restarting"
    SPEC_CHANGED = "SpecChanged"  # a running attempt is replaced to apply a changed spec
    NO_PROGRESS_REPORT = "NoProgressReport"  # ProgressReported=False: /progress silent past the stall timeout
    PROGRESS_RESUMED = "ProgressResumed"  # ProgressReported=True: it answers again
    SUSPENDED = "Suspended"
    # Terminal
    COMPLETED = "Completed"
    DATA_ERROR = "DataError"
    CONFIG_ERROR = "ConfigError"
    OUT_OF_MEMORY = "OutOfMemory"
    OOM_KILLED = "OOMKilled"
    RENDEZVOUS = "Rendezvous"
    NCCL = "NCCL"
    RANK_FAILED = "RankFailed"  # a training process of the gang died (killed, crashed, its peer vanished)
    STALLED = "Stalled"  # no optimizer step within failurePolicy.stallTimeoutSeconds (the launcher's watchdog)
    INTERRUPTED = "Interrupted"
    NODE_LOST = "NodeLost"
    EVICTED = "Evicted"
    PREEMPTED = "Preempted"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    RESTART_LIMIT_EXCEEDED = "RestartLimitExceeded"
    UNKNOWN = "Unknown"
    # Evaluation (condition Promoted)
    EVALUATION_PASSED = "EvaluationPassed"
    EVALUATION_RECORDED = "EvaluationRecorded"  # no gate: scores recorded, output promoted
    EVALUATION_BELOW_THRESHOLD = "EvaluationBelowThreshold"
    EVALUATION_FAILED = "EvaluationFailed"  # it could not run or recorded nothing: not promoted
    # Serving
    WAITING_FOR_MODEL = "WaitingForModel"
    MODEL_FAILED = "ModelFailed"  # the FineTuneJob that was to produce the model failed
    NOT_PROMOTED = "NotPromoted"  # the FineTuneJob succeeded but its evaluation did not pass its gate
    LOADING = "Loading"
    RESOLVED = "Resolved"  # the model's source is known; no engine has listed it yet
    SERVING = "Serving"
    ADAPTER_MISSING = "AdapterMissing"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"


# Reasons after which a fresh attempt (resuming from the newest checkpoint) can succeed. Unknown is
# included on purpose: infrastructure failures often leave no recognisable line, and maxRestarts bounds
# the cost. Data, config and out-of-memory failures repeat with the same spec, so they are not retried.
RETRYABLE_REASONS = frozenset(
    {
        Reason.RENDEZVOUS,
        Reason.NCCL,
        Reason.RANK_FAILED,
        Reason.STALLED,
        Reason.INTERRUPTED,
        Reason.NODE_LOST,
        Reason.EVICTED,
        Reason.PREEMPTED,
        Reason.UNKNOWN,
    }
)

# The launcher's exit codes: the contract between a training pod and the operator (the Job's podFailurePolicy
# names EXIT_RETRYABLE, so the evidence survives a deleted pod).
EXIT_OK = 0
EXIT_PERMANENT = 1
EXIT_RETRYABLE = 75  # EX_TEMPFAIL: a fresh attempt from the newest checkpoint can succeed

# The launcher's last line as the driver of a RayJob (distributed.runtime: ray): KubeRay copies the tail of a
# failed job's log into the RayJob's status.message, where the operator finds the outcome after this prefix.
OUTCOME_PREFIX = "modelforge outcome: "
