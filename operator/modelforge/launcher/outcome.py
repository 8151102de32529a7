"""How a training attempt ended: a classified reason, the lines that decided it, and the exit code.

The JSON summary goes to the pod's termination-message path, where the controller reads it.
Exit codes: 0 success, 1 permanent failure (do not retry the same spec), 75 retryable (EX_TEMPFAIL).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..api.conditions import EXIT_OK as EXIT_OK  # re-exported: the launcher's callers import them from here
from ..api.conditions import EXIT_PERMANENT as EXIT_PERMANENT
from ..api.conditions import EXIT_RETRYABLE as EXIT_RETRYABLE
from ..api.conditions import RETRYABLE_REASONS, Reason
from ..api.evaluation import JUDGE_API_KEY_ENV
from ..api.redact import redact
from ..plan.evaluation import MEASURED_KEYS

TERMINATION_MESSAGE_LIMIT = 4096  # bytes the kubelet keeps

# (reason, pattern) in priority order: the first reason with a matching line wins.
PATTERNS: tuple[tuple[Reason, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern))
    for reason, pattern in (
        (Reason.OUT_OF_MEMORY, r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|out of memory"),
        # launcher/rank.py: the wrong contract
        (Reason.CONFIG_ERROR, r"modelforge: world size mismatch|modelforge: replicas diverged"),
        (Reason.NCCL, r"NCCL error|ncclInternalError|ncclSystemError|ProcessGroupNCCL|collective operation timeout"),
        (Reason.RENDEZVOUS, r"Rendezvous\w*Error|DistNetworkError|TCPStore|timed out initializing process group|"
                            r"Connection refused.*(?:29\d\d\d|MASTER)|Name or service not known"),
        (Reason.DATA_ERROR, r"pyarrow\.lib\.Arrow\w+|JSONDecodeError|StopIteration|ZeroDivisionError|"
                            r"DatasetNotFoundError|FileNotFoundError.*(?:dataset|\.jsonl?)"),
        (Reason.CONFIG_ERROR, r"remaining_argv|unrecognized arguments|HFValidationError|is not a valid model|"
                              r"does not appear to have a file named|ValueError|KeyError|TypeError|AssertionError|"
                              # a DeepSpeed/torch op compiled at run time, in an image with no compiler for it
                              # (found on kind: ZeRO on the CPU image builds deepspeed_shm_comm): same every time
                              r"Error building extension"),
        # A process of the gang died: its own torchrun sees the signal, its peers see their connection drop.
        # After data and config errors: a rank's own deterministic error makes its peers lose it too.
        (Reason.RANK_FAILED, r"Signal \d+ \(SIG\w+\) received by PID|Connection closed by peer|"
                             r"Connection reset by peer|exitcode\s*:\s*-\d+|"
                             # Ray Train: a worker (actor) process died
                             r"ActorDiedError|RayActorError|The actor died unexpectedly|worker process has died"),
    )
)  # fmt: skip

EXCEPTION_LINE = re.compile(r"^(\[rank\d+\]: )?[\w.]*(Error|Exception|Interrupt)\b(: |$)")


@dataclass
class Outcome:
    """The summary the launcher writes when it stops."""

    outcome: str  # Succeeded | Failed
    reason: str
    message: str
    retryable: bool = False
    exit_code: int | None = None
    decisive_lines: list[str] = field(default_factory=list)
    last_step: int | None = None
    total_steps: int | None = None
    last_checkpoint: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    # spec.evaluation's measurement (api/evaluation.py EvaluationStatus, camelCase): the operator judges it
    evaluation: dict[str, Any] = field(default_factory=dict)

    @property
    def process_exit_code(self) -> int:
        if self.outcome == "Succeeded":
            return EXIT_OK
        return EXIT_RETRYABLE if self.retryable else EXIT_PERMANENT

    def to_json(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """Compact JSON within the kubelet's limit: decisive lines are trimmed first."""
        data: dict[str, Any] = {k: v for k, v in asdict(self).items() if v not in (None, [], {})}
        if data.get("evaluation"):  # only what the operator reads: it judges the gate itself
            data["evaluation"] = {k: v for k, v in data["evaluation"].items() if k in MEASURED_KEYS}
        text = json.dumps(data, separators=(",", ":"))
        while len(text.encode()) > limit and data.get("decisive_lines"):
            data["decisive_lines"] = [line[:200] for line in data["decisive_lines"][1:]]
            text = json.dumps(data, separators=(",", ":"))
        if len(text.encode()) > limit:
            data["message"] = data["message"][:500]
            text = json.dumps(data, separators=(",", ":"))
        if len(text.encode()) > limit and isinstance(data.get("evaluation", {}).get("error"), str):
            data["evaluation"] = {**data["evaluation"], "error": data["evaluation"]["error"][:200]}
            text = json.dumps(data, separators=(",", ":"))
        return text


def classify(lines: Iterable[str], *, interrupted: bool) -> tuple[Reason, list[str]]:
    """The reason a run failed, from the tail of its log, and the lines that show it."""
    if interrupted:
        return Reason.INTERRUPTED, []
    tail = [line.rstrip() for line in lines if line.strip()]
    for reason, pattern in PATTERNS:
        hits = [line for line in tail if pattern.search(line)]
        if hits:
            return reason, hits[-3:]
    # Unknown: the exception line says most (torchrun's summary boxes around it say nothing).
    raised = [line for line in tail if EXCEPTION_LINE.search(line)]
    return Reason.UNKNOWN, raised[-3:] or tail[-3:]


def failure(reason: Reason, message: str, **details: Any) -> Outcome:
    return Outcome("Failed", reason.value, message, retryable=reason in RETRYABLE_REASONS, **details)


def write_termination_message(outcome: Outcome, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(redact_outcome(outcome, secret_values(os.environ)).to_json())
    except OSError:
        pass  # best effort: local mode without a writable /dev/termination-log


# Env vars the rendered pods fill from Secrets (hub token, endpoint key): their values never leave the pod.
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN", "MODELFORGE_API_KEY", "VLLM_API_KEY",
              JUDGE_API_KEY_ENV)  # fmt: skip


def secret_values(env: Mapping[str, str]) -> list[str]:
    return [env[name] for name in SECRET_ENV if env.get(name)]


def redact_outcome(outcome: Outcome, secrets: Iterable[str] = ()) -> Outcome:
    """The outcome with every text a person will read in status redacted (api.redact)."""
    known = list(secrets)
    evaluation = dict(outcome.evaluation)
    if isinstance(evaluation.get("error"), str):  # an endpoint's own words (the judge's) may echo anything
        evaluation["error"] = redact(evaluation["error"], known)
    return replace(
        outcome,
        message=redact(outcome.message, known),
        decisive_lines=[redact(line, known) for line in outcome.decisive_lines],
        evaluation=evaluation,
    )
