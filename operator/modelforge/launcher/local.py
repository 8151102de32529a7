"""`modelforge run SPEC.yaml`: the pod's code path on this machine, with a progress bar and a summary."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from ..api.cel import Problem
from ..api.validate import Parsed, SpecError, parse_resource
from ..plan.lifecycle import spec_for_pods
from ..plan.resolve import PlanError
from ..specfile import select
from .devices import visible_gpus
from .distributed import EnvironmentError_, local_world
from .outcome import Outcome
from .progress import ProgressRecord
from .run import RunOptions, run_attempt


class ProgressBar:
    """One line, redrawn in place on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, stream: TextIO | None = None, width: int = 30):
        self.stream = stream or sys.stderr  # the stderr of the moment, not of import time
        self.width = width
        self.tty = self.stream.isatty()
        self._last = ("", 0.0)

    def __call__(self, record: ProgressRecord) -> None:
        if record.step is None or not record.total_steps:
            return
        filled = int(self.width * record.step / record.total_steps)
        bar = "#" * filled + "-" * (self.width - filled)
        parts = [f"[{bar}] {record.summary}"]
        if record.loss is not None:
            parts.append(f"loss {record.loss:.4f}")
        if record.tokens_per_second:
            parts.append(f"{record.tokens_per_second:,.0f} tok/s")
        if record.eta:
            parts.append(f"eta {record.eta}")
        line = "  ".join(parts)
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            self.stream.flush()
        elif line != self._last[0] and (now - self._last[1] > 5 or record.step == record.total_steps):
            self.stream.write(line + "\n")
            self._last = (line, now)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def load_finetunejob(path: Path, name: str | None = None) -> Parsed:
    """The FineTuneJob in a spec file (the one named `name` when the file has several). SpecError's
    problems each start with the `file:line` they are about; notes on skipped documents go to stderr."""
    selection = select(path, ("FineTuneJob",))
    for note in selection.notes:
        print(f"note: {note}", file=sys.stderr)
    if selection.all_problems:
        raise SpecError([Problem("", problem) for problem in selection.all_problems])
    docs = selection.ours
    if name:
        docs = [d for d in docs if isinstance(d.data.get("metadata"), dict) and d.data["metadata"].get("name") == name]
    if len(docs) != 1:
        found = ", ".join(repr(d.describe()) for d in selection.ours)
        raise SpecError([Problem("", f"{path}: expected one FineTuneJob{' named ' + repr(name) if name else ''}"
                                 f" (use --name to pick one), found {found or 'none'}")])  # fmt: skip
    try:
        return parse_resource(docs[0].data)
    except SpecError as exc:
        raise SpecError([Problem("", f"{docs[0].where(p.path)}: {p}") for p in exc.problems]) from None


def run_local(
    spec_path: Path,
    *,
    output: Path | None,
    name: str | None,
    dry_run: bool,
    processes: int | None = None,
    progress_port: int | None = None,
) -> Outcome:
    parsed = load_finetunejob(spec_path, name)
    env = dict(os.environ)
    gpus = visible_gpus(env)
    try:
        world, note = local_world(parsed.spec.resources.gpus_per_node, gpus, processes)
    except EnvironmentError_ as exc:
        raise SpecError([Problem("", f"{spec_path}: {exc}")]) from None
    output_root = (output or Path("modelforge-output") / parsed.name).resolve()
    output_root.mkdir(parents=True, exist_ok=True)
    log_path = output_root / "train.log"
    bar = ProgressBar()

    def say(line: str) -> None:
        if bar.tty:
            sys.stderr.write("\r")
        print(line, file=sys.stderr, flush=True)

    if note:
        say(note)
    with log_path.open("a") as log:
        options = RunOptions(
            name=parsed.name,
            output_root=output_root,
            world=world,
            local=True,
            base_dir=spec_path.resolve().parent,
            env=env,
            device="cuda" if gpus else "cpu",
            dry_run=dry_run,
            progress_port=progress_port,  # /progress and /metrics on loopback, as a pod serves them
            progress_host="127.0.0.1",
            sink=log,
            say=say,
            on_progress=bar,
        )
        if not dry_run:
            say(f"training {parsed.name}: ms-swift output goes to {log_path}")
        try:
            spec = spec_for_pods(parsed.spec)  # deepspeed: auto as the operator's planner resolves it
        except PlanError:
            spec = parsed.spec  # the attempt reports the batch arithmetic error with its field
        outcome = run_attempt(spec, options)
    bar.close()
    (output_root / "modelforge-summary.json").write_text(json.dumps(outcome.__dict__, indent=2) + "\n")
    if outcome.outcome == "Failed" and outcome.reason not in ("DataError",) and log_path.exists():
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        say("last lines of the training log:\n  " + "\n  ".join(tail))
    for key, value in outcome.outputs.items():
        say(f"{key}: {value}")
    return outcome
