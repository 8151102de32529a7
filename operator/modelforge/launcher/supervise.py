"""Run a child process in its own process group, forward SIGTERM/SIGINT to it, keep the tail of its output.

The child dies with the launcher: it runs in a session of its own (so a signal for the launcher's group does
not hit it before the launcher can act, e.g. save a checkpoint first), and the kernel sends it SIGKILL when
the launcher dies, SIGKILL included (PR_SET_PDEATHSIG). torchrun's workers, in sessions of their own by
torchrun's design, ask the same of torchrun (launcher/rank.py: die_with_parent).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import threading
import time
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
SUPERVISOR_PID_ENV = "MODELFORGE_SUPERVISOR_PID"  # the launcher's pid, for a child's orphan check
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_PRCTL = getattr(_LIBC, "prctl", None)  # resolved here: the child between fork and exec only calls it


def die_with_parent(parent: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies; exit now when the parent `parent`
    (pid) is already gone (it died before the request was made, so the kernel would never send it)."""
    if _PRCTL is None or _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not Linux: the launcher's own stop (SIGTERM, SIGKILL of the group) still applies
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def _child_setup(parent: int) -> Callable[[], None]:
    def setup() -> None:  # between fork and exec: no locks, no allocation beyond the call
        os.setsid()
        die_with_parent(parent)

    return setup


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc): torchrun starts each worker in a session of its own, so the
    child's process group does not reach them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_all(process: subprocess.Popen[str], pids: list[int], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _stop_group(process: subprocess.Popen[str], grace: float) -> None:
    """SIGTERM to the child's group and every descendant (with SIGCONT: a stopped process only acts on
    signals once continued), then SIGKILL for whatever is left after `grace` seconds."""
    pids = _descendants(process.pid)
    _signal_all(process, pids, signal.SIGTERM)
    _signal_all(process, pids, signal.SIGCONT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    _signal_all(process, pids + _descendants(process.pid), signal.SIGKILL)
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
    on_terminate: Callable[[int], float] | None = None,
) -> Finished:
    """Run `argv` to completion. `tick` runs every `tick_seconds` while it runs (progress polling); when it
    returns a message, the process group is stopped and the message is `Finished.stopped`.

    SIGTERM/SIGINT received by this process are forwarded to the child's whole process group (ms-swift
    forks torchrun, which forks one worker per GPU), and the run counts as interrupted. With `on_terminate`,
    the first such signal calls it instead (it may ask the trainer to save and stop) and the child gets the
    seconds it returns to exit on its own; then, or at a second signal, it is stopped (SIGTERM, SIGKILL
    after `stop_grace`).
    """
    process = subprocess.Popen(
        list(argv),
        env={**env, SUPERVISOR_PID_ENV: str(os.getpid())},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        preexec_fn=_child_setup(os.getpid()),  # setsid + prctl only: no Python-level locks
    )
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    if process.stdout is None:  # pragma: no cover - stdout=PIPE guarantees it
        raise RuntimeError("child process has no stdout pipe")
    pump = threading.Thread(target=_pump, args=(process.stdout, sink, tail), daemon=True)
    pump.start()

    interrupted = threading.Event()
    deadline: list[float] = []  # when the child, asked to save and stop, must be gone

    def forward(signum: int, _frame: object) -> None:
        first = not interrupted.is_set()
        interrupted.set()
        if first and on_terminate is not None:
            wait = on_terminate(signum)
            if wait > 0:
                deadline.append(time.monotonic() + wait)
                return
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
                if deadline and time.monotonic() > deadline[0]:
                    _stop_group(process, stop_grace)  # it did not save and exit in the time there was
                    break
                if tick is not None and (stopped := tick()) is not None:
                    _stop_group(process, stop_grace)
                    break
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if process.poll() is None:  # we are unwinding from an exception: do not leave trainers behind
            _stop_group(process, 0)
    pump.join(timeout=5)
    if pump.is_alive():
        # The child is gone but something it started still holds its output open (Ray's raylet and workers
        # outlive the driver by seconds): what is left of its process group is stopped, not left behind.
        for signum, wait in ((signal.SIGTERM, stop_grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signum)
            pump.join(timeout=wait)
            if not pump.is_alive():
                break
    if not pump.is_alive():
        process.stdout.close()
    if tick is not None:
        tick()
    return Finished(process.returncode, interrupted.is_set(), list(tail), stopped)
