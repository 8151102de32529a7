"""The distributed contract between the pod (or the local machine) and the training processes.

The renderer sets MODELFORGE_NNODES, MASTER_ADDR, MASTER_PORT and NPROC_PER_NODE on every pod; the
Indexed Job sets JOB_COMPLETION_INDEX (the node rank). The launcher starts the ranks itself with
torchrun's static rendezvous, exactly as ms-swift's CLI would (swift/cli/main.py), plus what that CLI
cannot set: the rendezvous timeout, no local restarts, and launcher/rank.py as each rank's entry (the
world-size check, the collective timeout, the heartbeat). ms-swift still reads NPROC_PER_NODE, NNODES,
NODE_RANK, MASTER_ADDR and MASTER_PORT inside training, so they stay in the environment; a one-process
run sets none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class EnvironmentError_(ValueError):
    """The pod environment contradicts itself; the message says which variable."""


@dataclass(frozen=True)
class World:
    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str | None
    master_port: int

    @property
    def size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def is_rank0_node(self) -> bool:
        return self.node_rank == 0

    def describe(self) -> str:
        # No master address: Ray Train connects the ranks (the driver on the head sees the whole world).
        where = f", rendezvous {self.master_addr}:{self.master_port}" if self.nnodes > 1 and self.master_addr else ""
        return (
            f"world size {self.size} = {self.nnodes} node(s) x {self.nproc_per_node} process(es), "
            f"this is node {self.node_rank}{where}"
        )

    def swift_env(self) -> dict[str, str]:
        """The variables ms-swift reads; empty for a single process (no torchrun)."""
        if self.size == 1:
            return {}
        env = {"NPROC_PER_NODE": str(self.nproc_per_node), "MASTER_PORT": str(self.master_port)}
        if self.nnodes > 1:
            env |= {"NNODES": str(self.nnodes), "NODE_RANK": str(self.node_rank), "MASTER_ADDR": str(self.master_addr)}
        return env


def rank_command(world: World, python: str, expect: int, rendezvous_timeout: int, collective_timeout: int,
                 sft_argv: list[str], backend: str = "gloo") -> list[str]:  # fmt: skip
    """The command that runs every rank of this node (launcher/rank.py). One process: the rank entry itself.
    Several: torchrun (static rendezvous, as ms-swift's CLI would start it) with the spec's rendezvous
    timeout and no local restarts: a dead rank fails the whole attempt, the operator restarts the gang."""
    entry = ["modelforge.launcher.rank", "--expect-world-size", str(expect), "--collective-timeout",
             str(collective_timeout), "--backend", backend, "--", *sft_argv]  # fmt: skip
    if world.size == 1:
        return [python, "-m", *entry]
    torchrun = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(world.nproc_per_node),
                "--nnodes", str(world.nnodes), "--node_rank", str(world.node_rank),
                # One node needs no DNS: its ranks meet on loopback.
                "--master_addr", str(world.master_addr if world.nnodes > 1 else "127.0.0.1"),
                "--master_port", str(world.master_port),
                "--rdzv_conf", f"timeout={rendezvous_timeout}", "--max_restarts", "0"]  # fmt: skip
    return [*torchrun, "-m", *entry]


def ray_command(world: World, python: str, collective_timeout: int, sft_argv: list[str], storage: str,
                address: str = "local", use_gpu: bool = False, start_timeout: int = 900) -> list[str]:  # fmt: skip
    """The Ray Train driver (launcher/ray_train.py) for `distributed.runtime: ray`: one worker per rank of
    the whole world (every node's), started by Ray rather than by torchrun."""
    command = [python, "-m", "modelforge.launcher.ray_train", "--workers", str(world.size), "--address", address,
               "--collective-timeout", str(collective_timeout), "--storage", storage,
               "--start-timeout", str(start_timeout)]  # fmt: skip
    if use_gpu:
        command.append("--use-gpu")
    return [*command, "--", *sft_argv]


def _int(env: Mapping[str, str], key: str, default: int | None = None) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        if default is None:
            raise EnvironmentError_(f"{key} is not set; the training pod must be created by the ModelForge operator")
        return default
    try:
        return int(raw)
    except ValueError:
        raise EnvironmentError_(f"{key}={raw!r} is not an integer") from None


def pod_world(env: Mapping[str, str], visible_gpus: int) -> World:
    """The world of a training pod, checked for consistency."""
    nnodes = _int(env, "MODELFORGE_NNODES", 1)
    node_rank = _int(env, "JOB_COMPLETION_INDEX", 0)
    nproc = _int(env, "NPROC_PER_NODE", 1)
    port = _int(env, "MASTER_PORT", 29500)
    master = env.get("MASTER_ADDR")
    if nnodes < 1 or nproc < 1:
        raise EnvironmentError_(f"MODELFORGE_NNODES={nnodes} and NPROC_PER_NODE={nproc} must both be at least 1")
    if not 0 <= node_rank < nnodes:
        raise EnvironmentError_(f"JOB_COMPLETION_INDEX={node_rank} is outside 0..{nnodes - 1} (MODELFORGE_NNODES)")
    if nnodes > 1 and not master:
        raise EnvironmentError_("MASTER_ADDR is not set but MODELFORGE_NNODES > 1: ranks cannot find rank 0")
    if visible_gpus and nproc > visible_gpus:
        raise EnvironmentError_(
            f"NPROC_PER_NODE={nproc} but only {visible_gpus} GPU(s) are visible in this pod: check the GPU request "
            "(resources.gpuResourceName) and the device plugin"
        )
    return World(nnodes, node_rank, nproc, master, port)


def local_world(requested_gpus: int, visible_gpus: int, processes: int | None = None) -> tuple[World, str | None]:
    """The world on this machine: as many processes as GPUs (requested, up to visible), or 1 on CPU;
    `processes` (modelforge run --processes) overrides it: N ranks, on N GPUs or on the CPU (gloo)."""
    nproc = max(1, min(requested_gpus, visible_gpus))
    note = None
    if processes is not None:
        if processes < 1:
            raise EnvironmentError_(f"--processes {processes}: give at least 1")
        if visible_gpus and processes > visible_gpus:
            raise EnvironmentError_(f"--processes {processes}: this machine has {visible_gpus} GPU(s)")
        where = f"{processes} GPU(s)" if visible_gpus else "the CPU (gloo)"
        note = f"running {processes} training process(es) on {where} (--processes)"
        return World(1, 0, processes, "127.0.0.1", 29500), note
    if visible_gpus == 0:
        note = f"no GPU visible: running 1 process on the CPU (the spec asks for {requested_gpus} GPU(s))"
    elif requested_gpus > visible_gpus:
        note = f"the spec asks for {requested_gpus} GPU(s) per node, this machine has {visible_gpus}: using {nproc}"
    return World(1, 0, nproc, "127.0.0.1", 29500), note
