"""The launcher under faults, with the REAL ms-swift on the CPU (`modelforge run` on the tiny model):

- a SIGKILL of the launcher's whole process group leaves no training process behind (torchrun's workers,
  in sessions of their own, included): each process is found by PID from /proc, never by name;
- SIGTERM mid-training saves a checkpoint at the current step, exits 75 with the outcome written, and the
  next attempt resumes from that checkpoint (the work lost is printed and recorded in docs/benchmarks.md);
- SIGTERM during pre-flight ends with the outcome written too (Interrupted, 75), not a bare exit 143;
- a truncated newest checkpoint is skipped, a checkpoint a resume failed on is marked bad, and the next
  attempt resumes from the one before.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path
from typing import IO

import pytest

from modelforge.launcher.checkpoints import BAD_MARKER, list_checkpoints
from modelforge.launcher.outcome import EXIT_RETRYABLE
from modelforge.launcher.supervise import _descendants
from modelforge.testing import write_chat_dataset

from .test_local_run import MODELFORGE, logged_steps, run, summary, write_spec

pytestmark = pytest.mark.integration
LONG = {"maxSteps": 400, "batchSizePerDevice": 2, "maxLength": 256, "loggingSteps": 1}


def alive(pid: int) -> bool:
    """Running (a zombie has finished: only its parent's wait is missing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_for_step(out: Path, step: int, process: subprocess.Popen[str], timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        steps = logged_steps(out) if (out / "run" / "logging.jsonl").exists() else []
        if steps and max(steps) >= step:
            return max(steps)
        time.sleep(0.1)
    raise AssertionError(f"step {step} not reached (exit {process.poll()})")


def start(spec: Path, out: Path, *extra: str, log: IO[str] | None = None) -> subprocess.Popen[str]:
    """`modelforge run` in a session of its own (its group is the launcher's: what a pod's kill hits)."""
    return subprocess.Popen([*MODELFORGE, "run", str(spec), "--output", str(out), *extra],
                            stderr=log or subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)  # fmt: skip


def test_sigkill_of_the_launchers_group_leaves_no_trainer_behind(tmp_path, tiny_model):
    spec = write_spec(tmp_path, tiny_model, hyperparameters=LONG, checkpointing={"saveSteps": 1000})
    out = tmp_path / "out"
    log = (tmp_path / "launcher.log").open("w")
    # The launcher, torchrun, and two workers in sessions of their own.
    process = start(spec, out, "--processes", "2", log=log)
    trainers: list[int] = []
    try:
        wait_for_step(out, 2, process)
        trainers += _descendants(process.pid)
        sessions = {os.getsid(pid) for pid in trainers if alive(pid)}
        assert len(trainers) >= 3 and len(sessions) >= 2, (trainers, sessions)  # not all in the launcher's group
        # Stopped, they write nothing: no broken pipe would end them, only the kernel (PR_SET_PDEATHSIG). A
        # trainer inside a long step, or hung in a collective, is just as quiet.
        for pid in trainers:
            os.kill(pid, signal.SIGSTOP)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in trainers) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [pid for pid in trainers if alive(pid)]
        assert survivors == [], [Path(f"/proc/{p}/cmdline").read_bytes()[:200] for p in survivors]
    finally:
        for pid in trainers:  # what a regression left behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def sigterm_at(spec: Path, out: Path, step: int, log: Path) -> tuple[int, int, float, str]:
    """`modelforge run` SIGTERMed once it logged `step`: (the step logged then, its exit code, seconds from the
    signal to its exit, its stderr)."""
    with log.open("w") as sink:
        process = start(spec, out, log=sink)
        try:
            at_signal = wait_for_step(out, step, process)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return at_signal, process.returncode, time.monotonic() - signalled, log.read_text()


def test_sigterm_saves_a_checkpoint_at_the_current_step_and_the_next_attempt_resumes_there(tmp_path, tiny_model):
    """Preempted twice: each SIGTERM saves at the step reached, each next attempt resumes there."""
    spec = write_spec(tmp_path, tiny_model, hyperparameters=LONG, checkpointing={"saveSteps": 1000, "keepLast": 5})
    out = tmp_path / "out"
    last_logged = 0
    for attempt in (1, 2):
        at_signal, code, exit_seconds, stderr = sigterm_at(spec, out, last_logged + 10, tmp_path / f"{attempt}.log")
        assert code == EXIT_RETRYABLE, stderr[-3000:]
        outcome = summary(out)
        assert outcome["reason"] == "Interrupted" and outcome["retryable"] is True, outcome
        saved = list_checkpoints(out / "run")
        assert saved, stderr[-3000:]
        step = int(saved[-1].name.rsplit("-", 1)[1])
        steps = logged_steps(out)
        assert at_signal <= step == max(steps) < LONG["maxSteps"], (at_signal, step, steps)  # the step reached
        assert f"after saving checkpoint-{step}" in outcome["message"], outcome
        assert outcome["last_checkpoint"].endswith(f"checkpoint-{step}")
        if attempt == 2:
            assert f"resuming from checkpoint-{last_logged}" in stderr, stderr[-3000:]
            after = steps[steps.index(last_logged) + 1 :]
            lost = last_logged - (after[0] - 1)
            print(f"\nthe next attempt resumed at step {after[0]}: {lost} step(s) lost; SIGTERM again at step "
                  f"{at_signal}: saved checkpoint-{step}, exit 75 in {exit_seconds:.1f} s")  # fmt: skip
            assert lost == 0 and after == list(range(last_logged + 1, step + 1)), steps
        else:
            print(f"\nSIGTERM at step {at_signal}: saved checkpoint-{step}, exit 75 in {exit_seconds:.1f} s")
        last_logged = step


def test_sigterm_during_preflight_writes_the_outcome(tmp_path, tiny_model):
    data = write_chat_dataset(tmp_path / "big.jsonl", 60000)  # pre-flight reads and tokenizes every row
    spec = write_spec(tmp_path, tiny_model, datasets=[{"source": str(data)}])
    out = tmp_path / "out"
    process = start(spec, out)
    assert process.stderr is not None
    try:
        seen: list[str] = []
        while not (line := process.stderr.readline()).startswith("modelforge launcher: job"):
            assert line, seen  # the launcher ended before starting the attempt
            seen.append(line)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == EXIT_RETRYABLE, stderr[-2000:]
    outcome = summary(out)
    assert outcome["reason"] == "Interrupted" and "pre-flight" in outcome["message"], outcome
    assert "Traceback" not in stderr
    assert not (out / "run").exists()


def test_a_truncated_checkpoint_is_skipped_and_a_bad_one_marked_then_the_previous_one_resumes(tmp_path, tiny_model):
    hyper = {"maxSteps": 6, "batchSizePerDevice": 2, "maxLength": 256, "loggingSteps": 1}
    spec = write_spec(tmp_path, tiny_model, hyperparameters=hyper, checkpointing={"saveSteps": 2, "keepLast": 10})
    out = tmp_path / "out"
    assert (first := run(spec, out)).returncode == 0, first.stderr[-3000:]
    run_dir = out / "run"
    assert [c.name for c in list_checkpoints(run_dir)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    weights = run_dir / "checkpoint-6" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a torn copy
    # checkpoint-4's optimizer state: a whole zip, but not what torch.save wrote: only loading it can tell.
    with zipfile.ZipFile(run_dir / "checkpoint-4" / "optimizer.pt", "w") as junk:
        junk.writestr("junk/readme.txt", "not an optimizer")
    longer = write_spec(tmp_path, tiny_model, name="longer", hyperparameters={**hyper, "maxSteps": 8},
                        checkpointing={"saveSteps": 2, "keepLast": 10})  # fmt: skip

    second = run(longer, out)
    assert "skipping checkpoint-6: not whole (adapter_model.safetensors is truncated" in second.stderr
    assert "resuming from checkpoint-4" in second.stderr
    assert second.returncode == EXIT_RETRYABLE, second.stderr[-3000:]
    assert summary(out)["retryable"] is True and "marked bad" in summary(out)["message"]
    assert (run_dir / "checkpoint-4" / BAD_MARKER).exists()

    third = run(longer, out)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "skipping checkpoint-4: not whole (marked bad by an earlier attempt" in third.stderr
    assert "resuming from checkpoint-2" in third.stderr
    assert (run_dir / "checkpoint-4.bad" / BAD_MARKER).exists()  # set aside, kept for a person
    steps = logged_steps(out)
    assert steps[-6:] == [3, 4, 5, 6, 7, 8], steps
    assert json.loads((run_dir / "checkpoint-8" / "trainer_state.json").read_text())["global_step"] == 8
