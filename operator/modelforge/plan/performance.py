"""Performance presets: `performance: auto` switches on what is faster and safe for the method and hardware.

Each switch names the ms-swift flags it sets and why; the argv builder applies them, the planner counts
their memory effect, and status.plan.performance lists them. `performance: none` gives ms-swift's defaults.
Measured on an H100 (../shared/GPU.md, Qwen3-8B shape, LoRA r16, batch 4): Liger + bf16 adapters +
no dropout 3.55k -> 4.41k tokens/s and 23.2 -> 18.2 GiB; at batch 16 6.76k tokens/s in 31.8 GiB.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api.common import Dtype
from ..api.finetunejob import DeepSpeed, FineTuneJobSpec, Method, Performance

DEFAULT_LORA_DROPOUT = 0.05  # ms-swift's default, used when lora.dropout is not given and performance is none
DEFAULT_OPTIMIZER = "adamw_torch"
ZERO3 = (DeepSpeed.ZERO3, DeepSpeed.ZERO3_OFFLOAD)
OFFLOAD = (DeepSpeed.ZERO2_OFFLOAD, DeepSpeed.ZERO3_OFFLOAD)


@dataclass(frozen=True)
class Capabilities:
    """What the training process can use: a GPU, and which optional kernels are installed."""

    cuda: bool
    liger: bool = False
    flash_attn: bool = False


# The trainer image (images/trainer) ships CUDA, liger-kernel and flash-attn: what the controller plans for.
TRAINER_IMAGE = Capabilities(cuda=True, liger=True, flash_attn=True)


@dataclass(frozen=True)
class Switch:
    name: str
    flags: tuple[tuple[str, str], ...]  # (flag, value) pairs; a flag already in the argv gets this value
    why: str

    def describe(self) -> str:
        return f"{self.name} ({' '.join(f'{f} {v}' for f, v in self.flags)})"


def training_dtype(spec: FineTuneJobSpec, cuda: bool) -> Dtype:
    dtype = spec.hyperparameters.dtype
    if dtype == Dtype.AUTO:
        return Dtype.BFLOAT16 if cuda else Dtype.FLOAT32
    return dtype


def switches(spec: FineTuneJobSpec, deepspeed: DeepSpeed, caps: Capabilities) -> list[Switch]:
    """The speed-ups `performance: auto` applies to this job on this hardware (none when performance: none)."""
    if spec.performance == Performance.NONE:
        return []
    hp = spec.hyperparameters
    lora = spec.method != Method.FULL
    out: list[Switch] = []
    if lora and (spec.lora is None or spec.lora.dropout is None):
        out.append(Switch("no LoRA dropout", (("--lora_dropout", "0"),),
                          "dropout copies every adapted input; set lora.dropout to keep it"))  # fmt: skip
    if not caps.cuda:
        return out
    if lora and training_dtype(spec, True) == Dtype.BFLOAT16:
        out.append(Switch("bf16 adapters", (("--lora_dtype", "bfloat16"),),
                          "ms-swift keeps adapters in fp32 by default: fp32 casts dominate a LoRA step"))  # fmt: skip
    if caps.liger and deepspeed not in ZERO3:
        # Liger's fused cross-entropy reads lm_head.weight outside the module, which ZeRO-3 keeps partitioned.
        out.append(Switch("Liger kernels", (("--use_liger_kernel", "true"),),
                          "fused RMSNorm/SwiGLU/RoPE and cross-entropy that never builds the logits"))  # fmt: skip
    if caps.flash_attn and not hp.packing:
        out.append(Switch("padding-free batches", (("--attn_impl", "flash_attn"), ("--padding_free", "true")),
                          "flash attention over concatenated rows: no compute spent on padding"))  # fmt: skip
    elif caps.flash_attn:
        out.append(Switch("flash attention", (("--attn_impl", "flash_attn"),), "packing needs flash attention"))
    if hp.optimizer is None and deepspeed not in OFFLOAD:
        out.append(Switch("fused AdamW", (("--optim", "adamw_torch_fused"),),
                          "one kernel per step instead of one per tensor; same arithmetic"))  # fmt: skip
    return out


def names(found: list[Switch]) -> list[str]:
    return [s.describe() for s in found]
