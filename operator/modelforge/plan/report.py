"""The capacity plan as text for people (`modelforge plan`)."""

from __future__ import annotations

from ..api.finetunejob import FineTuneJobSpec, LoraSpec, Method
from .capacity import PRESET_WORDS, USABLE_FRACTION, Plan, duration_words
from .memory import params
from .models import Architecture
from .performance import Capabilities, switches, training_dtype


def parameter_words(count: int) -> str:
    """A parameter count as people write it: 8.19 B, 0.60 B, 3.2 M (a tiny test model is not "0.00 B")."""
    if count >= 10**8:
        return f"{count / 1e9:.2f} B"
    if count >= 10**5:
        return f"{count / 1e6:.1f} M"
    return f"{count:,}"


def local_cpu_lines(spec: FineTuneJobSpec, processes: int = 1) -> list[str]:
    """What `modelforge run` does with this spec on a machine without a GPU, which the GPU plan above it does
    not describe: the device, the processes, the dtype, and which speed-ups apply (the others need CUDA)."""
    applied = switches(spec, spec.distributed.deepspeed, Capabilities(cuda=False))
    gpu_only = [s.name for s in switches(spec, spec.distributed.deepspeed, Capabilities(cuda=True))
                if s.name not in {a.name for a in applied}]  # fmt: skip
    dtype = training_dtype(spec, False).value
    lines = [
        "",
        "  this machine has no GPU: `modelforge run` trains on the CPU, which the figures above do not describe",
        f"  local        {processes} process(es) on the CPU (gloo; --processes N for more), {dtype}, no DeepSpeed",
        f"  local speed  {', '.join(a.name for a in applied) or 'ms-swift defaults'}"
        + (f"; not on a CPU: {', '.join(gpu_only)}" if gpu_only else ""),
        "  local time   not estimated for CPUs (the quickstart's 200 LoRA steps of the tiny model: docs/benchmarks.md)",
        "  cluster      the GPU plan above is what the operator checks before it creates pods",
    ]
    return lines


def _method(spec: FineTuneJobSpec) -> str:
    if spec.method == Method.FULL:
        return "full fine-tune"
    lora = spec.lora or LoraSpec()
    return f"{spec.method.value} rank {lora.rank} ({', '.join(lora.target_modules)})"


def format_plan(spec: FineTuneJobSpec, arch: Architecture | None, plan: Plan, how: str = "") -> list[str]:
    hp = spec.hyperparameters
    world = plan.resolved.world_size
    shape = f"{spec.resources.nodes} node(s) x {spec.resources.gpus_per_node} GPU(s) of {plan.gpu_memory_gib:g} GiB"
    model = spec.model.source
    if arch is not None:
        model += f" ({arch.name}, {parameter_words(params(arch).total)} parameters)"
    lines = [
        f"  model        {model}",
        f"  training     {_method(spec)}, batch {hp.batch_size_per_device} x {hp.max_length} tokens per GPU, "
        f"accumulation {plan.resolved.gradient_accumulation}, "
        f"checkpointing {'on' if hp.gradient_checkpointing else 'off'}",
        f"  hardware     {shape} ({world} process(es))",
    ]
    if how:
        lines.append(f"  architecture {how}")
    if not plan.planned:
        lines += [f"  verdict      NOT PLANNED: {n}" for n in plan.notes[:1]]
        lines += [f"  note         {n}" for n in plan.notes[1:]]
        return lines
    lines.append(f"  verdict      {plan.verdict}")
    lines.append(f"  DeepSpeed    {plan.resolved.deepspeed.value} ({PRESET_WORDS[plan.resolved.deepspeed]})")
    header = (f"  {'preset':<14}{'GiB/GPU':>8}{'frozen':>9}{'trained':>8}{'activ.':>8}{'logits':>8}{'other':>7}"
              f"{'host GiB':>10}  fits")  # fmt: skip
    lines += ["", header]
    for option in plan.options:
        e = option.estimate
        mark = "yes" if option.fits else ("no (host RAM)" if option.fits_gpu else "no")
        chosen = " <-" if plan.chosen is option else ""
        lines.append(
            f"  {option.deepspeed.value:<14}{e.gib():>8.1f}{e.gib(e.weights):>9.1f}{e.gib(e.trainable_states):>8.1f}"
            f"{e.gib(e.activations):>8.1f}{e.gib(e.logits):>8.1f}{e.gib(e.fixed):>7.1f}{e.gib(e.host):>10.0f}"
            f"  {mark}{chosen}"
        )
    lines.append(f"  (usable: {USABLE_FRACTION:.0%} of {plan.gpu_memory_gib:g} GiB; host RAM per node)")
    lines.append("")
    for fix in plan.fixes:
        lines.append(f"  fix          {fix}")
    for switch in plan.performance:
        lines.append(f"  performance  {switch.describe()}: {switch.why}")
    if not plan.performance:
        lines.append("  performance  ms-swift defaults (performance: none)")
    if plan.tokens is not None and plan.seconds is not None and plan.mfu is not None:
        bound = "" if plan.tokens_exact else "at most "
        lines.append(f"  tokens       {bound}{plan.tokens:,}")
        lines.append(f"  duration     {bound}{duration_words(plan.seconds)} (assumed MFU {plan.mfu:.1%})")
    for note in plan.notes:
        if not note.startswith("duration:"):
            lines.append(f"  note         {note}")
    return lines
