"""Run a child process in its own process group, forward SIGTERM/SIGINT to it, keep the tail of its output."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

TAIL_LINES = 200


@dataclass
class Finished:
    returncode: int
    interrupted: bool
    tail: list[str] = field(default_factory=list)
    stopped: str | None = None  # why `tick` had the process stopped (the stall watchdog), else None


STOP_GRACE_SECONDS = 10.0


def _stop_group(process: subprocess.Popen[str], grace: float) -> None:
    """SIGTERM to the whole group (with SIGCONT: a stopped process only acts on signals once continued),
    then SIGKILL for whatever is left after `grace` seconds."""
    for signum in (signal.SIGTERM, signal.SIGCONT):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the group: torchrun's workers too, even if torchrun is gone
    process.wait()


def _pump(stream: IO[str], sink: IO[str] | None, tail: deque[str]) -> None:
    for line in stream:
        tail.append(line)
        if sink is not None:
            sink.write(line)
            sink.flush()


def supervise(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    sink: IO[str] | None,
    tick: Callable[[], str | None] | None = None,
    tick_seconds: float = 1.0,
    stop_grace: float = STOP_GRACE_SECONDS,
) -> Finished:
    """Run `argv` to completion. `tick` runs every `tick_seconds` while it runs (progress polling); when it
    returns a message, the process group is stopped and the message is `Finished.stopped`.

    SIGTERM/SIGINT received by this process are forwarded to the child's whole process group (ms-swift
    forks torchrun, which forks one worker per GPU), and the run counts as interrupted.
    """
    process = subprocess.Popen(
        list(argv),
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    if process.stdout is None:  # pragma: no cover - stdout=PIPE guarantees it
        raise RuntimeError("child process has no stdout pipe")
    pump = threading.Thread(target=_pump, args=(process.stdout, sink, tail), daemon=True)
    pump.start()

    interrupted = threading.Event()

    def forward(signum: int, _frame: object) -> None:
        interrupted.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main_thread:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, forward)
    stopped = None
    try:
        while True:
            try:
                process.wait(timeout=tick_seconds)
                break
            except subprocess.TimeoutExpired:
                if tick is not None and (stopped := tick()) is not None:
                    _stop_group(process, stop_grace)
                    break
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if process.poll() is None:  # we are unwinding from an exception: do not leave trainers behind
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    pump.join(timeout=5)
    if tick is not None:
        tick()
    return Finished(process.returncode, interrupted.is_set(), list(tail), stopped)
