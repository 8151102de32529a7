"""Resolve the parts of a FineTuneJob spec that depend on the world size: accumulation and DeepSpeed.

The full capacity planner (memory per GPU, offload, fits-or-not) refines `deepspeed: auto`; until a
model architecture is known, auto uses the rule below and says so in `notes`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api.finetunejob import DeepSpeed, FineTuneJobSpec, Method


class PlanError(ValueError):
    """The spec is valid alone but contradicts itself once resolved; the message names the field."""


@dataclass(frozen=True)
class Resolved:
    world_size: int
    gradient_accumulation: int
    deepspeed: DeepSpeed  # never AUTO
    notes: tuple[str, ...] = ()


def resolve(spec: FineTuneJobSpec) -> Resolved:
    world = spec.resources.nodes * spec.resources.gpus_per_node
    hp = spec.hyperparameters
    notes: list[str] = []
    if hp.gradient_accumulation is not None:
        accumulation = hp.gradient_accumulation
    elif hp.global_batch_size is not None:
        per_step = hp.batch_size_per_device * world
        if hp.global_batch_size % per_step:
            raise PlanError(
                f"spec.hyperparameters.globalBatchSize {hp.global_batch_size} is not a multiple of "
                f"batchSizePerDevice x GPUs = {hp.batch_size_per_device} x {world} = {per_step}; "
                f"use {max(per_step, hp.global_batch_size // per_step * per_step)} or set gradientAccumulation"
            )
        accumulation = hp.global_batch_size // per_step
        notes.append(f"gradient accumulation {accumulation} = globalBatchSize {hp.global_batch_size} / {per_step}")
    else:
        accumulation = 1

    deepspeed = spec.distributed.deepspeed
    if deepspeed == DeepSpeed.AUTO:
        if world == 1:
            deepspeed = DeepSpeed.NONE
        elif spec.method == Method.FULL:
            deepspeed = DeepSpeed.ZERO3
        else:
            deepspeed = DeepSpeed.ZERO2
        notes.append(f"deepspeed auto -> {deepspeed} for {spec.method} on {world} GPU(s)")
    return Resolved(world, accumulation, deepspeed, tuple(notes))
