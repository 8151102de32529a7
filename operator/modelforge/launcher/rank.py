"""One training process (a rank): join the process group, prove it is the one the spec asked for, then run
ms-swift's `sft` in this same process.

The launcher starts this module instead of ms-swift's CLI (which would start torchrun itself with no say
over the timeouts): `python -m modelforge.launcher.rank` for one process, and under
`torch.distributed.run -m modelforge.launcher.rank` for many (launcher/distributed.py builds it). Before
ms-swift sees anything, each rank

1. joins the default process group (gloo on the CPU, NCCL on GPUs) with the spec's collective timeout
   (ms-swift's own default is 18,000,000 s, so a hung all-reduce would hang the job for months; ms-swift
   and transformers reuse a group that is already initialised),
2. checks that the group has the world size the spec asked for (nodes x processes per node) and that
   every rank agrees on it, with one all-reduce: a node started with the wrong contract (e.g. NNODES
   unset, so two nodes would each train their own model) fails here, classified, within seconds,
3. registers a TrainerCallback that writes a heartbeat (this rank's last optimizer step and when) into
   MODELFORGE_HEARTBEAT_DIR, which the launcher's stall watchdog reads, and that checks at the end of
   training that every rank holds the same weights (one model was trained, not one per rank), and that,
   when the launcher was asked to stop (SIGTERM: eviction, preemption, `kubectl delete`), saves a checkpoint
   at the step every rank has reached and ends training (the stop file, see STOP_FILE).

Each rank also asks the kernel to kill it when its parent (torchrun, or the launcher) dies, and the same for
what it forks: torchrun puts its workers in sessions of their own, so nothing else would stop them after a
SIGKILL of the launcher.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from .remote_code import run_swift
from .supervise import SUPERVISOR_PID_ENV, die_with_parent

HEARTBEAT_ENV = "MODELFORGE_HEARTBEAT_DIR"
CALLBACK = "modelforge_heartbeat"
WORLD_MISMATCH = "modelforge: world size mismatch"  # the launcher classifies these lines (outcome.py)
REPLICAS_DIVERGED = "modelforge: replicas diverged"
STOP_FILE = "stop"  # in the heartbeat directory: the launcher asks for a save and a clean stop
SAVED_ON_STOP = "modelforge: stop requested, saving a checkpoint at step"  # launcher/run.py looks for it


class WorldMismatch(RuntimeError):
    pass


def heartbeat_path(directory: Path, rank: int) -> Path:
    return directory / f"rank-{rank}.json"


def write_heartbeat(directory: Path, rank: int, step: int, phase: str) -> None:
    target = heartbeat_path(directory, rank)
    tmp = target.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({"rank": rank, "step": step, "phase": phase, "time": time.time()}))
        tmp.replace(target)  # the watchdog never reads half a file
    except OSError:
        pass  # a heartbeat lost is a late one, never a reason to stop training


class StallWatchdog:
    """The launcher's side of the heartbeat: the ranks of this node that began training and then finished no
    optimizer step (nor an evaluation batch, nor a save) for `timeout_s`. Before a rank's first heartbeat
    (loading the model and data) nothing is judged: the rendezvous timeout and the job deadline cover it."""

    def __init__(self, directory: Path, ranks: range, timeout_s: int, clock: Any = time.time):
        self.directory, self.ranks, self.timeout_s, self.clock = directory, ranks, timeout_s, clock

    def check(self) -> str | None:
        if self.timeout_s <= 0:
            return None
        now = self.clock()
        for rank in self.ranks:
            try:
                beat = json.loads(heartbeat_path(self.directory, rank).read_text())
            except (OSError, ValueError):
                continue  # not begun yet (or being replaced right now)
            if beat.get("phase") == "finished":
                continue  # after training (the final save, the merge): not judged
            # A checkpoint save or an evaluation may start after this beat: it gets three timeouts.
            budget = self.timeout_s * (3 if beat.get("phase") == "saving" else 1)
            quiet = now - float(beat.get("time", now))
            if quiet > budget:
                return (
                    f"rank {rank} finished no training step for {quiet:.0f} s (its last: step {beat.get('step')}, "
                    f"{beat.get('phase')}); failurePolicy.stallTimeoutSeconds is {self.timeout_s}: a hung "
                    "collective, a stopped or starved process. Stopped; the attempt is retried from the newest "
                    "checkpoint"
                )
        return None


SETUP_TIMEOUT_S = 7200  # until training begins: rank 0 may download the model or tokenize while others wait


def tighten_collective_timeout(timeout_s: int) -> None:
    """Training began: from now on a collective gets the spec's collective timeout, not the setup's."""
    import torch.distributed as dist

    if dist.is_initialized():
        with contextlib.suppress(AttributeError, RuntimeError, ValueError):  # an older torch: setup's stays
            dist.distributed_c10d._set_pg_timeout(timedelta(seconds=timeout_s))


def join_process_group(expected: int, timeout_s: int, backend: str = "gloo") -> tuple[int, int]:
    """(rank, world size) of the group this process joined, after checking it against `expected`."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world != expected:
        raise WorldMismatch(
            f"{WORLD_MISMATCH}: this process was started in a world of {world} process(es) but the spec asks for "
            f"{expected} (resources.nodes x gpusPerNode); check NNODES/NPROC_PER_NODE of every node"
        )
    if world == 1:
        return 0, 1
    cuda = backend == "nccl"  # the launcher's decision (its device), not whatever CUDA this process sees
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():  # Ray Train, for one, initialises it before the worker function runs
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=max(timeout_s, SETUP_TIMEOUT_S)))
    joined = dist.get_world_size()
    # Every rank says what world it believes in; the sum proves they are in ONE group of that size.
    belief = torch.tensor([1, expected], dtype=torch.int64, device="cuda" if cuda else "cpu")
    dist.all_reduce(belief)
    members, total_expected = int(belief[0]), int(belief[1])
    if joined != expected or members != expected or total_expected != expected * expected:
        raise WorldMismatch(
            f"{WORLD_MISMATCH}: rank {dist.get_rank()} joined a process group of {joined} ({members} answered) "
            f"but the spec asks for {expected}; the ranks disagree on the world"
        )
    if dist.get_rank() == 0:
        print(f"modelforge: {joined} processes joined one process group ({backend}, "
              f"collective timeout {timeout_s} s)", flush=True)  # fmt: skip
    return rank, joined


def check_replicas(model: Any) -> None:
    """After training, every rank must hold the same trainable weights (data parallel replicas): a group
    whose ranks trained independently (gradients never averaged) fails here instead of saving one rank's
    model as if it were the job's. ZeRO-3 shards the weights (each rank's are empty): nothing to compare."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    trainable = [p for p in model.parameters() if p.requires_grad]
    if any(hasattr(p, "ds_id") for p in trainable) or type(model).__name__.startswith("FullyShardedDataParallel"):
        return  # ZeRO-3 / FSDP: each rank holds a shard, there are no replicas to compare
    device = trainable[0].device if trainable else torch.device("cpu")
    mine = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():  # no float64 copy of a parameter: reductions accumulate in float64
        for p in trainable:
            mine[0] += p.sum(dtype=torch.float64)
            mine[1] += torch.linalg.vector_norm(p, 1, dtype=torch.float64)
    everyone = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    spread = max(float((e - everyone[0]).abs().max()) for e in everyone)
    scale = max(1.0, float(everyone[0][1]))
    if spread > 1e-6 * scale:
        sums = ", ".join(f"{float(e[0]):.6g}" for e in everyone)
        raise RuntimeError(f"{REPLICAS_DIVERGED}: after training the ranks' weights differ (sums {sums}): they "
                           "trained independently; check the distributed setup (ddp backend, use_cpu)")  # fmt: skip
    if dist.get_rank() == 0:
        print(f"modelforge: the {dist.get_world_size()} ranks hold identical weights after training "
              f"(sum {float(mine[0]):.6g})", flush=True)  # fmt: skip


def stop_requested(directory: Path) -> bool:
    """Whether the launcher asked to stop, agreed by every rank (one tiny all-reduce per step when there are
    several): a rank that stopped alone would leave the others waiting in the next collective."""
    wanted = (directory / STOP_FILE).exists()
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return wanted
    import torch

    device = f"cuda:{torch.cuda.current_device()}" if "nccl" in str(dist.get_backend()) else "cpu"
    flag = torch.tensor([1 if wanted else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def register_heartbeat(directory: Path, rank: int, collective_timeout_s: int) -> None:
    """Adds the heartbeat callback to ms-swift's callback registry (the launcher passes --callbacks)."""
    from swift.callbacks import TrainerCallback, callbacks_map

    class Heartbeat(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            write_heartbeat(directory, rank, int(state.global_step), "training")
            tighten_collective_timeout(collective_timeout_s)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if stop_requested(directory) and not control.should_training_stop:
                control.should_save = True  # the Trainer saves checkpoint-<step> right after this callback
                control.should_training_stop = True
                if os.environ.get("LOCAL_RANK", "0") == "0":  # one line per node: each launcher reads its own
                    print(f"{SAVED_ON_STOP} {state.global_step}", flush=True)
            busy = getattr(control, "should_save", False) or getattr(control, "should_evaluate", False)
            write_heartbeat(directory, rank, int(state.global_step), "saving" if busy else "training")

        def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            write_heartbeat(directory, rank, int(state.global_step), "training")  # gradient accumulation

        def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            write_heartbeat(directory, rank, int(state.global_step), "evaluating")  # a long eval is not a stall

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            write_heartbeat(directory, rank, int(state.global_step), "saved")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            write_heartbeat(directory, rank, int(state.global_step), "finished")
            if kwargs.get("model") is not None:
                check_replicas(kwargs["model"])

    callbacks_map[CALLBACK] = Heartbeat


def run_rank(expect: int, collective_timeout: int, backend: str, sft_args: list[str]) -> int:
    """Steps 1-3 above, then ms-swift's `sft` in this process. Shared by torchrun's ranks (main, below) and
    Ray Train's workers (launcher/ray_train.py), whose process group Ray has already initialised."""
    sft_args = list(sft_args)
    try:
        rank, _ = join_process_group(expect, collective_timeout, backend)
    except WorldMismatch as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 1
    heartbeat = os.environ.get(HEARTBEAT_ENV)
    if heartbeat:
        Path(heartbeat).mkdir(parents=True, exist_ok=True)
        register_heartbeat(Path(heartbeat), rank, collective_timeout)
        if "--callbacks" in sft_args:  # the user's own callbacks (extraArgs) and ours
            sft_args.insert(sft_args.index("--callbacks") + 1, CALLBACK)
        else:
            sft_args += ["--callbacks", CALLBACK]
    # ms-swift's `sft` in this process; a model's own code only with spec.model.trustRemoteCode
    if not run_swift("sft", sft_args):
        print("modelforge: ms-swift is not installed in this image (no swift.cli.sft)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelforge.launcher.rank", description=__doc__)
    parser.add_argument("--expect-world-size", type=int, required=True)
    parser.add_argument("--collective-timeout", type=int, default=1800, help="seconds, once training began")
    parser.add_argument("--backend", choices=("gloo", "nccl"), default="gloo")
    parser.add_argument("sft_args", nargs=argparse.REMAINDER, help="-- then the arguments of `swift sft`")
    args = parser.parse_args(argv)
    parent = os.getppid()
    die_with_parent(parent)
    # Reparented to init before the request: the parent died, nobody supervises this process. In a pod the
    # launcher itself is PID 1 (the container's entrypoint), so there a parent of 1 is the launcher.
    if parent == 1 and os.environ.get(SUPERVISOR_PID_ENV, "1") != "1":
        return 1
    # What this rank forks (DataLoader workers, dataset map pools) dies with it as well: a stopped or busy
    # worker would not get to its own parent check.
    os.register_at_fork(after_in_child=die_with_parent)
    sft_args = list(args.sft_args[1:] if args.sft_args[:1] == ["--"] else args.sft_args)
    return run_rank(args.expect_world_size, args.collective_timeout, args.backend, sft_args)


if __name__ == "__main__":
    sys.exit(main())
