"""The capacity plan of a FineTuneJob: does it fit, with which DeepSpeed preset, how much host RAM, how long.

Pure: the caller supplies the architecture (the table, or a local config.json read by the shell), the GPU
memory (spec.resources.gpuMemory or the operator's default) and, when known, dataset statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..api.base import quantity_bytes
from ..api.finetunejob import (
    DeepSpeed,
    FineTuneJobSpec,
    LoraSpec,
    Method,
    Optimizer,
    Performance,
    QuantizationSpec,
    Runtime,
)
from .memory import GIB, Estimate, Stage, Workload, estimate, lora_params, params
from .models import Architecture
from .performance import DEFAULT_LORA_DROPOUT, TRAINER_IMAGE, Capabilities, Switch, switches, training_dtype
from .resolve import Resolved, resolve

USABLE_FRACTION = 0.92  # of a GPU's memory: room for allocator fragmentation the estimate does not model
PEAK_TFLOPS = 800.0  # bf16 dense, H100-class (774 measured with an 8192^3 matmul)
# Model FLOPs utilisation assumed for the duration estimate, measured on an H100 (GPU.md) where marked.
MFU_STOCK = 0.14  # measured: ms-swift defaults, LoRA r16, batch 4
MFU_PRESETS = 0.17  # measured: Liger + bf16 adapters + no dropout, batch 4 (0.26 at batch 16)
MFU_OFFLOAD = 0.05  # assumed: CPU Adam and parameter traffic dominate
# assumed: the HF MoE layers loop over experts; ms-swift's published 91 s/it for Qwen3-30B-A3B on 16 GPUs
# implies well under 1 %.
MFU_MOE = 0.005

# What `deepspeed: auto` tries, cheapest first. ZeRO-2 + offload is not an automatic choice on several GPUs:
# it keeps a full 16-bit copy of the weights on every GPU and needs more host RAM than ZeRO-3 + offload.
AUTO_ORDER_ONE_GPU = (DeepSpeed.NONE, DeepSpeed.ZERO2_OFFLOAD, DeepSpeed.ZERO3_OFFLOAD)
AUTO_ORDER_MANY = (DeepSpeed.ZERO2, DeepSpeed.ZERO3, DeepSpeed.ZERO3_OFFLOAD)
PRESET_WORDS = {
    DeepSpeed.NONE: "no DeepSpeed",
    DeepSpeed.ZERO1: "ZeRO-1",
    DeepSpeed.ZERO2: "ZeRO-2",
    DeepSpeed.ZERO3: "ZeRO-3",
    DeepSpeed.ZERO2_OFFLOAD: "ZeRO-2 + CPU offload",
    DeepSpeed.ZERO3_OFFLOAD: "ZeRO-3 + CPU offload",
}


@dataclass(frozen=True)
class PlanSettings:
    gpu_memory_gib: float = 80.0  # when spec.resources.gpuMemory is not given
    peak_tflops: float = PEAK_TFLOPS
    capabilities: Capabilities = TRAINER_IMAGE


@dataclass(frozen=True)
class DataStats:
    rows: int
    mean_tokens: float | None = None


@dataclass(frozen=True)
class Option:
    deepspeed: DeepSpeed
    estimate: Estimate
    fits_gpu: bool
    fits_host: bool

    @property
    def fits(self) -> bool:
        return self.fits_gpu and self.fits_host


@dataclass(frozen=True)
class Plan:
    resolved: Resolved  # world size, accumulation and the DeepSpeed preset to run
    gpu_memory_gib: float
    planned: bool  # False: architecture unknown, nothing estimated
    fits: bool | None = None
    chosen: Option | None = None
    options: tuple[Option, ...] = ()
    verdict: str = ""
    fixes: tuple[str, ...] = ()
    performance: tuple[Switch, ...] = ()
    tokens: int | None = None
    tokens_exact: bool = False
    seconds: float | None = None
    mfu: float | None = None
    notes: tuple[str, ...] = field(default=())

    def status(self) -> dict[str, object]:
        """status.plan (camelCase, JSON types)."""
        out: dict[str, object] = {
            "deepspeed": self.resolved.deepspeed.value,
            "gradientAccumulation": self.resolved.gradient_accumulation,
        }
        if self.fits is not None:
            out["fits"] = self.fits
        if self.chosen is not None:
            out["gpuMemoryGiBPerGpu"] = round(self.chosen.estimate.gib(), 1)
            out["hostMemoryGiBPerNode"] = round(self.chosen.estimate.gib(self.chosen.estimate.host), 1)
        if self.verdict:
            out["verdict"] = self.verdict[:1000]
        if self.tokens is not None:
            out["tokens"] = self.tokens
        if self.seconds is not None:
            out["estimatedDuration"] = duration_words(self.seconds)
        if self.performance:
            out["performance"] = [s.describe()[:253] for s in self.performance][:32]
        notes = [*self.fixes, *self.notes]
        if notes:
            out["notes"] = [n[:1000] for n in notes][:32]
        return out


def duration_words(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def gpu_memory_gib(spec: FineTuneJobSpec, settings: PlanSettings) -> float:
    if spec.resources.gpu_memory:
        return quantity_bytes(spec.resources.gpu_memory) / GIB
    return settings.gpu_memory_gib


def workload(
    spec: FineTuneJobSpec, arch: Architecture, deepspeed: DeepSpeed, found: list[Switch], cuda: bool
) -> Workload:
    hp = spec.hyperparameters
    flags = {flag: value for s in found for flag, value in s.flags}
    lora = spec.lora or LoraSpec()
    quant = spec.quantization or QuantizationSpec()
    dtype_bytes = 4 if training_dtype(spec, cuda).value == "float32" else 2
    dropout = float(flags.get("--lora_dropout", DEFAULT_LORA_DROPOUT if lora.dropout is None else lora.dropout)) > 0
    optimizer_bytes = 2.0 if hp.optimizer in (Optimizer.ADAMW_8BIT, Optimizer.PAGED_ADAMW_8BIT) else 8.0
    if hp.optimizer == Optimizer.SGD:
        optimizer_bytes = 0.0
    return Workload(
        arch=arch,
        full=spec.method == Method.FULL,
        batch=hp.batch_size_per_device,
        seq=hp.max_length,
        world=spec.resources.nodes * spec.resources.gpus_per_node,
        nodes=spec.resources.nodes,
        stage=Stage(deepspeed.value),
        compute_bytes=dtype_bytes,
        quant_bits=quant.bits if spec.method == Method.QLORA else None,
        double_quant=quant.double_quant,
        lora_rank=lora.rank,
        lora_targets=tuple(lora.target_modules),
        lora_bytes=2 if flags.get("--lora_dtype") == "bfloat16" else 4,
        lora_dropout=dropout,
        grad_checkpointing=hp.gradient_checkpointing,
        liger=flags.get("--use_liger_kernel") == "true",
        optimizer_bytes=optimizer_bytes,
    )


def _option(spec: FineTuneJobSpec, arch: Architecture, deepspeed: DeepSpeed, capacity: float,
            caps: Capabilities) -> Option:  # fmt: skip
    found = switches(spec, deepspeed, caps)
    est = estimate(workload(spec, arch, deepspeed, found, caps.cuda))
    host_limit = quantity_bytes(spec.resources.memory) if spec.resources.memory is not None else None
    fits_host = host_limit is None or est.host <= host_limit
    return Option(deepspeed, est, est.gib() <= capacity * USABLE_FRACTION, fits_host)


def _candidates(spec: FineTuneJobSpec, world: int) -> tuple[DeepSpeed, ...]:
    """The presets worth comparing for this job, cheapest first."""
    order: tuple[DeepSpeed, ...]
    if world > 1:
        order = AUTO_ORDER_MANY
    elif spec.method == Method.FULL:
        order = AUTO_ORDER_ONE_GPU
    else:  # LoRA's optimizer states are small: offloading them alone gains nothing
        order = (DeepSpeed.NONE, DeepSpeed.ZERO3_OFFLOAD)
    if spec.method == Method.QLORA:  # bitsandbytes 4/8-bit weights cannot be partitioned by ZeRO-3
        order = tuple(d for d in order if d not in (DeepSpeed.ZERO3, DeepSpeed.ZERO3_OFFLOAD))
    wanted = spec.distributed.deepspeed
    if wanted != DeepSpeed.AUTO and wanted not in order:
        order = (*order, wanted)
    return order


def _describe(option: Option, capacity: float) -> str:
    e = option.estimate
    text = f"{PRESET_WORDS[option.deepspeed]}: {e.gib():.1f} GiB per GPU of {capacity:.0f}"
    if e.host > 0 and option.deepspeed in (DeepSpeed.ZERO2_OFFLOAD, DeepSpeed.ZERO3_OFFLOAD):
        text += f", {e.gib(e.host):.0f} GiB host RAM per node"
    return text


Change = tuple[str, Callable[[FineTuneJobSpec], FineTuneJobSpec]]


def _set(section: str, key: str, value: object) -> Callable[[FineTuneJobSpec], FineTuneJobSpec]:
    def apply(spec: FineTuneJobSpec) -> FineTuneJobSpec:
        return spec.model_copy(update={section: getattr(spec, section).model_copy(update={key: value})})

    return apply


def _set_resources(per_node: int, nodes: int) -> Callable[[FineTuneJobSpec], FineTuneJobSpec]:
    def apply(spec: FineTuneJobSpec) -> FineTuneJobSpec:
        resources = spec.resources.model_copy(update={"gpus_per_node": per_node, "nodes": nodes})
        return spec.model_copy(update={"resources": resources})

    return apply


def _changes(spec: FineTuneJobSpec) -> list[Change]:
    """Single changes that lower memory, cheapest (least loss of speed or quality) first."""
    hp = spec.hyperparameters
    world = spec.resources.nodes * spec.resources.gpus_per_node
    out: list[Change] = []
    if not hp.gradient_checkpointing:
        out.append(
            ("hyperparameters.gradientCheckpointing: true", _set("hyperparameters", "gradient_checkpointing", True))
        )
    if hp.batch_size_per_device > 1:
        accumulation = (hp.gradient_accumulation or 1) * hp.batch_size_per_device
        # The same global batch: a globalBatchSize is resolved again; otherwise the accumulation takes it up.
        keep = {} if hp.global_batch_size else {"gradient_accumulation": accumulation}
        same_batch = hp.model_copy(update={"batch_size_per_device": 1, **keep})
        out.append((f"hyperparameters.batchSizePerDevice: 1 and gradientAccumulation: {accumulation} (same batch)",
                    lambda s: s.model_copy(update={"hyperparameters": same_batch})))  # fmt: skip
    if spec.performance == Performance.NONE:
        out.append(("performance: auto", lambda s: s.model_copy(update={"performance": Performance.AUTO})))
    if spec.distributed.deepspeed not in (DeepSpeed.AUTO, DeepSpeed.ZERO3_OFFLOAD) and spec.method != Method.QLORA:
        out.append(("distributed.deepspeed: zero3_offload (optimizer and weights in host RAM; slower)",
                    _set("distributed", "deepspeed", DeepSpeed.ZERO3_OFFLOAD)))  # fmt: skip
    if spec.method == Method.LORA:
        out.append(("method: qlora (4-bit base weights)", lambda s: s.model_copy(update={"method": Method.QLORA})))
    if spec.method != Method.FULL and (spec.lora or LoraSpec()).rank > 16:
        lora = (spec.lora or LoraSpec()).model_copy(update={"rank": 16, "alpha": 2 * 16})
        out.append(("lora.rank: 16", lambda s: s.model_copy(update={"lora": lora})))
    length = hp.max_length
    while length > 256:
        length //= 2
        out.append((f"hyperparameters.maxLength: {length} (longer rows are dropped)",
                    _set("hyperparameters", "max_length", length)))  # fmt: skip
    for gpus in (g for g in (2, 4, 8, 16, 32, 64) if g > world):
        nodes, per_node = max(1, gpus // 8), min(gpus, 8)
        out.append((f"{gpus} GPUs ({nodes} node(s) x {per_node})", _set_resources(per_node, nodes)))
    return out


def _fixes(spec: FineTuneJobSpec, arch: Architecture, settings: PlanSettings, capacity: float) -> list[str]:
    """The cheapest changes that make a job that does not fit fit (at most three; pairs when no single one does)."""
    return [words for words, _ in _fitting(spec, arch, settings, capacity)]


def _fitting(
    spec: FineTuneJobSpec, arch: Architecture, settings: PlanSettings, capacity: float
) -> list[tuple[str, FineTuneJobSpec]]:
    """(what to say, the changed spec) for the cheapest changes that fit, cheapest first."""
    changes = _changes(spec)
    tries = [(words, apply(spec)) for words, apply in changes]
    out: list[tuple[str, FineTuneJobSpec]] = []
    done: set[str] = set()
    for rounds in (tries, [(f"{w1} and {w2}", f2(f1(spec))) for i, (w1, f1) in enumerate(changes[:6])
                           for w2, f2 in changes[i + 1:]]):  # fmt: skip
        for words, candidate in rounds:
            family = " and ".join(part.split(":")[0] for part in words.split(" and "))
            if family in done:
                continue  # a milder version of the same change already fits
            best = _best(candidate, arch, settings, capacity)
            if best is not None and best.fits:
                done.add(family)
                text = f"fits with {words}: {best.estimate.gib():.1f} GiB per GPU ({PRESET_WORDS[best.deepspeed]})"
                out.append((text, candidate))
                if len(out) == 3:
                    return out
        if out:
            return out
    for gib in (g for g in (12, 16, 24, 40, 48, 80, 141) if g > capacity):
        best = _best(spec, arch, settings, gib)
        if best is not None and best.fits:
            bigger = spec.resources.model_copy(update={"gpu_memory": f"{gib}Gi"})
            out.append((f"fits a GPU with {gib} GiB: {best.estimate.gib():.1f} GiB ({PRESET_WORDS[best.deepspeed]})",
                        spec.model_copy(update={"resources": bigger})))  # fmt: skip
            break
    return out


def cheapest_fix(
    spec: FineTuneJobSpec, arch: Architecture, settings: PlanSettings | None = None
) -> tuple[str, FineTuneJobSpec] | None:
    """The first fix the plan names, as a changed spec (`modelforge plan --fix`); None when it fits or none does."""
    settings = settings or PlanSettings()
    if plan(spec, arch, settings).fits is not False:
        return None
    capacity = gpu_memory_gib(spec, settings)
    found = _fitting(spec, arch, settings, capacity)
    return found[0] if found else None


def _best(spec: FineTuneJobSpec, arch: Architecture, settings: PlanSettings, capacity: float) -> Option | None:
    try:
        world = resolve(spec).world_size
    except ValueError:
        return None
    options = [_option(spec, arch, d, capacity, settings.capabilities) for d in _candidates(spec, world)]
    return next((o for o in options if o.fits), None)


def _tokens(spec: FineTuneJobSpec, resolved: Resolved, data: DataStats | None) -> tuple[int | None, bool, list[str]]:
    """Tokens the job trains on (exact when dataset statistics are known, else an upper bound)."""
    hp = spec.hyperparameters
    per_step = hp.batch_size_per_device * resolved.gradient_accumulation * resolved.world_size
    mean = data.mean_tokens if data and data.mean_tokens else None
    length = min(mean, hp.max_length) if mean else hp.max_length
    if hp.max_steps:
        return int(hp.max_steps * per_step * length), mean is not None, []
    rows = data.rows if data else None
    if rows is None and all(d.samples for d in spec.datasets):
        rows = sum(d.samples or 0 for d in spec.datasets)
    if rows is None:
        return None, False, ["tokens and duration: unknown until the datasets are read (pre-flight counts them)"]
    assert hp.epochs is not None
    return int(rows * hp.epochs * length), mean is not None, []


def _flops_per_token(spec: FineTuneJobSpec, arch: Architecture, seq: float) -> float:
    """Model FLOPs per trained token (GPU.md's convention: recomputation is not counted)."""
    p = params(arch)
    attention = 2 * arch.layers * seq * arch.heads * arch.head_size  # causal QK^T and AV, forward
    if spec.method == Method.FULL:
        return 6 * p.per_token_matmul + 3 * attention
    lora = lora_params(arch, (spec.lora or LoraSpec()).rank, tuple((spec.lora or LoraSpec()).target_modules))[0]
    return 4 * p.per_token_matmul + 3 * attention + 6 * lora


# distributed.runtime: ray. The head pod (render/rayjob.py) runs Ray's control plane and the driver, no training.
RAY_HEAD_CPU, RAY_HEAD_MEMORY_GIB = 2, 8


def runtime_note(spec: FineTuneJobSpec) -> str | None:
    """What the ray runtime adds to the plan; None for torchrun (nothing beyond the training pods)."""
    if spec.distributed.runtime != Runtime.RAY:
        return None
    nodes, gpus = spec.resources.nodes, spec.resources.gpus_per_node
    return (f"runtime ray: a KubeRay RayJob with {nodes} worker pod(s) x {gpus} GPU(s), one Ray Train worker per "
            f"GPU, plus a head pod ({RAY_HEAD_CPU} CPU, {RAY_HEAD_MEMORY_GIB} GiB, no GPU) for Ray's control plane "
            "and the driver. GPU memory is planned as with torchrun (Ray adds none); each worker pod also runs "
            "Ray's raylet, agents and log monitor in host memory (0.33 GiB measured, bench/ray_overhead.py) and "
            "its object store reserves up to 30% of the pod's memory in /dev/shm. Needs KubeRay and the chart's "
            "ray.enabled")  # fmt: skip


# swift infer's pt backend (transformers' generate) answers one question at a time; an assumed decode speed for
# the note below, not a measurement of the user's GPU (docs/benchmarks.md has the CPU's, docs/evaluation.md why).
EVAL_TOKENS_PER_SECOND = 20.0


def evaluation_note(spec: FineTuneJobSpec, arch: Architecture | None, capacity_gib: float) -> str | None:
    """What spec.evaluation adds after training: the weights each GPU holds while it answers, and the time."""
    evaluation = spec.evaluation
    if evaluation is None:
        return None
    models = "the base and the tuned model in turn" if evaluation.baseline else "the tuned model"
    per_question = evaluation.max_new_tokens / EVAL_TOKENS_PER_SECOND
    timing = (f"up to {duration_words(per_question)} per question and model ({evaluation.max_new_tokens} new tokens at "
              f"an assumed {EVAL_TOKENS_PER_SECOND:.0f} tokens/s, one question at a time), at most "
              f"{duration_words(evaluation.timeout_seconds)} in all (evaluation.timeoutSeconds)")  # fmt: skip
    if arch is None:
        return f"evaluation: after training, rank 0 answers the questions with {models} (swift infer); {timing}"
    bits = (spec.quantization or QuantizationSpec()).bits if spec.method == Method.QLORA else 16
    gpus = spec.resources.gpus_per_node
    weights = arch.params_b * 1e9 * bits / 8 / GIB
    memory = (f"{weights:.1f} GiB of {bits}-bit weights over the pod's {gpus} GPU(s), {weights / gpus:.1f} GiB "
              "each, once training has freed them")  # fmt: skip
    if weights / gpus > USABLE_FRACTION * capacity_gib:
        memory += "; more than a GPU holds: the rest is offloaded to host memory and answers much slower"
    return f"evaluation: after training, rank 0 loads {models} (swift infer; {memory}); {timing}"


def plan(
    spec: FineTuneJobSpec,
    arch: Architecture | None,
    settings: PlanSettings | None = None,
    data: DataStats | None = None,
    why_unknown: str = "",
) -> Plan:
    """Plan a job. Raises PlanError (from resolve) for batch arithmetic that contradicts itself."""
    settings = settings or PlanSettings()
    resolved = resolve(spec)
    capacity = gpu_memory_gib(spec, settings)
    caps = settings.capabilities
    if arch is None:
        why = why_unknown or f"{spec.model.source} is not a known architecture"
        note = (f"not planned: {why}; memory was not checked. Known: Qwen3 0.6B-32B, Qwen3-30B-A3B, Qwen2.5-7B, "
                "Llama-2 7B/13B, ChatGLM3-6B, or a local directory with config.json")  # fmt: skip
        found = switches(spec, resolved.deepspeed, caps)
        extra = tuple(n for n in (runtime_note(spec), evaluation_note(spec, None, capacity)) if n)
        return Plan(resolved, capacity, planned=False, performance=tuple(found),
                    notes=(note, *resolved.notes, *extra))  # fmt: skip
    options = tuple(_option(spec, arch, d, capacity, caps) for d in _candidates(spec, resolved.world_size))
    wanted = spec.distributed.deepspeed
    notes = [n for n in resolved.notes if not n.startswith("deepspeed auto")]
    if (ray := runtime_note(spec)) is not None:
        notes.append(ray)
    if wanted == DeepSpeed.AUTO:
        chosen = next((o for o in options if o.fits), None)
        fits = chosen is not None
        chosen = chosen or min(options, key=lambda o: o.estimate.total)
    else:
        chosen = next(o for o in options if o.deepspeed == wanted)
        fits = chosen.fits
    resolved = replace(resolved, deepspeed=chosen.deepspeed)
    e = chosen.estimate
    cheaper = options[: options.index(chosen)] if chosen in options else ()
    if fits and cheaper and not any(o.fits for o in cheaper):
        tried = "; ".join(_describe(o, capacity) for o in cheaper)
        verdict = (
            f"fits only with {PRESET_WORDS[chosen.deepspeed]} ({_describe(chosen, capacity)}); does not fit: {tried}"
        )
    elif fits:
        verdict = f"fits: {_describe(chosen, capacity)}"
        lighter = [o for o in cheaper if o.fits]
        if lighter:
            lighter_words = PRESET_WORDS[lighter[0].deepspeed]
            notes.append(f"{lighter_words} would also fit and run faster: {lighter[0].estimate.gib():.1f} GiB "
                         "per GPU (distributed.deepspeed: auto picks it)")  # fmt: skip
    else:
        shown = options if wanted == DeepSpeed.AUTO else (chosen,)
        verdict = "does not fit: " + "; ".join(_describe(o, capacity) for o in shown)
        verdict += f" (usable: {USABLE_FRACTION:.0%} of the GPU)"
        host_short = [o for o in shown if o.fits_gpu and not o.fits_host]
        if host_short:
            o = host_short[0]
            verdict += (f"; {PRESET_WORDS[o.deepspeed]} fits the GPUs but needs {o.estimate.gib(o.estimate.host):.0f} "
                        f"GiB host RAM per node and resources.memory is {spec.resources.memory}")  # fmt: skip
    if e.host > 0 and chosen.deepspeed in (DeepSpeed.ZERO2_OFFLOAD, DeepSpeed.ZERO3_OFFLOAD) and fits:
        verdict += f"; needs about {e.gib(e.host):.0f} GiB host RAM per node"
        if spec.resources.memory is None:
            notes.append(
                f"set resources.memory to at least {math.ceil(e.gib(e.host))}Gi so the pods land on nodes that have it"
            )
    fixes = tuple(_fixes(spec, arch, settings, capacity)) if not fits else ()
    if not fits and not fixes:
        notes.append(
            "no single change found that makes it fit; try several GPUs with ZeRO-3 + offload, or a smaller model"
        )
    if e.logits > 0.25 * e.total and e.logits > 2 * GIB:
        notes.append(f"the logits take {e.gib(e.logits):.1f} GiB: without fused cross-entropy (Liger) "
                     "the allocator fragments around them and the real peak can be much higher")  # fmt: skip
    found = switches(spec, resolved.deepspeed, caps)
    tokens, exact, token_notes = _tokens(spec, resolved, data)
    notes += token_notes
    seconds = mfu = None
    if tokens is not None:
        mean = (data.mean_tokens if data and data.mean_tokens else None) or spec.hyperparameters.max_length
        mfu = MFU_PRESETS if found and caps.cuda else MFU_STOCK
        if resolved.deepspeed in (DeepSpeed.ZERO2_OFFLOAD, DeepSpeed.ZERO3_OFFLOAD):
            mfu = MFU_OFFLOAD
        if arch.experts:
            mfu = MFU_MOE
        flops = tokens * _flops_per_token(spec, arch, min(mean, spec.hyperparameters.max_length))
        seconds = flops / (resolved.world_size * settings.peak_tflops * 1e12 * mfu)
        bound = "" if exact else "at most "
        notes.append(f"duration: {bound}{duration_words(seconds)} for {bound}{tokens:,} tokens, assuming {mfu:.1%} MFU "
                     f"of {settings.peak_tflops:.0f} TFLOP/s per GPU")  # fmt: skip
    if (evaluated := evaluation_note(spec, arch, capacity)) is not None:
        notes.append(evaluated)
    return Plan(resolved, capacity, True, fits, chosen, options, verdict, fixes, tuple(found), tokens, exact,
                seconds, mfu, tuple(notes))  # fmt: skip
