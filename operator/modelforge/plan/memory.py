"""Memory of one training process: model states, activations, logits, fixed overheads (pure arithmetic).

Model states follow DeepSpeed's own accounting (`estimate_zero2_model_states_mem_needs`,
`estimate_zero3_model_states_mem_needs`: 2 bytes of 16-bit weights plus 18 bytes per trainable parameter
for 16-bit and fp32 gradients, fp32 master weights, Adam moments), and the tests hold them to it.
Activations are counted per token and per layer from the architecture, then scaled by two constants
calibrated on real `swift sft` runs on an H100 (Qwen3-8B shape, ../shared/REFERENCE.md and GPU.md):

- ACTIVATION_OVERHEAD: autograd keeps ~1.4x the tensors named below (temporaries, masks, casts).
- BACKWARD_WORKSET: with gradient checkpointing the peak holds every layer input plus ~2 recomputed layers
  (the layer's activations and its gradients in flight).

The estimate is the peak *allocated* memory plus the CUDA context; the caching allocator's fragmentation
is not modelled (it was 0.2 GiB with fused cross-entropy, up to ~3 GiB without it, measured).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .models import Architecture

GIB = 1024**3
ACTIVATION_OVERHEAD = 1.4
BACKWARD_WORKSET = 2.0
CUDA_CONTEXT_GIB = 0.75  # measured: nvidia-smi minus torch's reserved memory on the H100
DISTRIBUTED_BUFFERS_GIB = 0.5  # NCCL communicators and DeepSpeed bookkeeping when world > 1
PROCESS_HOST_GIB = 3.0  # host RAM of one training process (python, torch, CUDA runtime, dataloader)
DEEPSPEED_HOST_BUFFER = 1.5  # DeepSpeed's own estimators multiply offloaded state by this
ZERO3_MAX_LIVE_PARAMS = 1e9  # ms-swift's zero3 presets: stage3_max_live_parameters
ZERO_BUCKET_ELEMENTS = 2e8  # ms-swift's zero2 presets: reduce/allgather bucket sizes


class Stage(StrEnum):
    """How model states are laid out (mirrors the DeepSpeed presets ms-swift ships)."""

    NONE = "none"
    ZERO1 = "zero1"
    ZERO2 = "zero2"
    ZERO3 = "zero3"
    ZERO2_OFFLOAD = "zero2_offload"  # optimizer states on the CPU
    ZERO3_OFFLOAD = "zero3_offload"  # optimizer states and parameters on the CPU


LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Params:
    """Parameter counts derived from an Architecture."""

    total: int
    embeddings: int  # input embedding plus an untied lm_head
    layer_linear: int  # matmul parameters of all decoder layers
    largest_module: int  # DeepSpeed's "largest layer": the biggest single module's parameters
    per_token_matmul: int  # matmul parameters one token passes through (MoE: active experts only), lm_head incl.

    @property
    def billions(self) -> float:
        return self.total / 1e9


def _linears(arch: Architecture) -> dict[str, tuple[int, int, int]]:
    """(in, out, copies per layer) of every linear in a decoder layer; MoE experts count once per expert."""
    h, q, kv = arch.hidden, arch.heads * arch.head_size, arch.kv_heads * arch.head_size
    out = {"q_proj": (h, q, 1), "k_proj": (h, kv, 1), "v_proj": (h, kv, 1), "o_proj": (q, h, 1)}
    if arch.experts:
        e, inner = arch.experts, arch.expert_intermediate
        out.update({"gate_proj": (h, inner, e), "up_proj": (h, inner, e), "down_proj": (inner, h, e)})
    else:
        inner = arch.intermediate
        out.update({"gate_proj": (h, inner, 1), "up_proj": (h, inner, 1), "down_proj": (inner, h, 1)})
    return out


def params(arch: Architecture) -> Params:
    linears = _linears(arch)
    per_layer = sum(i * o * n for i, o, n in linears.values())
    router = arch.hidden * arch.experts
    vocab = arch.vocab * arch.hidden
    embeddings = vocab * (1 if arch.tied_embeddings else 2)
    norms = arch.layers * 2 * arch.hidden + arch.hidden
    layer_linear = arch.layers * (per_layer + router)
    if arch.experts:
        active = sum(i * o * (arch.experts_per_token if n > 1 else 1) for i, o, n in linears.values())
    else:
        active = per_layer
    # DeepSpeed's "largest layer" is the module with the most parameters of its own. transformers' MoE models
    # (Qwen3-MoE: Qwen3MoeExperts) hold a layer's experts as one module of fused gate_up and down weights:
    # 604 M parameters for Qwen3-30B-A3B, twice its embedding.
    fused_experts = 3 * arch.experts * arch.hidden * arch.expert_intermediate
    largest = max(vocab, fused_experts, max(i * o for i, o, _ in linears.values()))
    return Params(
        total=layer_linear + embeddings + norms,
        embeddings=embeddings,
        layer_linear=layer_linear,
        largest_module=largest,
        per_token_matmul=arch.layers * (active + router) + vocab,
    )


def lora_params(arch: Architecture, rank: int, targets: tuple[str, ...]) -> tuple[int, list[str]]:
    """Trainable LoRA parameters for `targets` (all-linear or module names), and the adapted module names."""
    linears = _linears(arch)
    names = list(linears) if "all-linear" in targets else [n for n in LINEAR_NAMES if n in targets]
    return arch.layers * sum(rank * (linears[n][0] + linears[n][1]) * linears[n][2] for n in names), names


@dataclass(frozen=True)
class Workload:
    """One training process's configuration, everything the estimate depends on."""

    arch: Architecture
    full: bool  # full fine-tune (else LoRA)
    batch: int  # micro-batch per GPU
    seq: int  # padded sequence length (maxLength: the worst batch)
    world: int = 1
    nodes: int = 1
    stage: Stage = Stage.NONE
    compute_bytes: int = 2  # bf16/fp16 = 2, fp32 = 4
    quant_bits: int | None = None  # QLoRA base weights
    double_quant: bool = True
    lora_rank: int = 8
    lora_targets: tuple[str, ...] = ("all-linear",)
    lora_bytes: int = 4  # ms-swift keeps LoRA weights in fp32 unless --lora_dtype is given
    lora_dropout: bool = True
    grad_checkpointing: bool = True
    liger: bool = False  # fused linear cross-entropy, RMSNorm, SwiGLU
    optimizer_bytes: float = 8.0  # Adam: two moments per trainable parameter, fp32


@dataclass(frozen=True)
class Estimate:
    """Bytes per GPU by component, and host bytes per node."""

    weights: float
    trainable_states: float  # gradients + optimizer + master weights (what DeepSpeed's estimators count)
    activations: float
    logits: float
    fixed: float
    host: float
    trainable_params: int
    notes: tuple[str, ...] = field(default=())

    @property
    def model_states(self) -> float:
        return self.weights + self.trainable_states

    @property
    def total(self) -> float:
        return self.weights + self.trainable_states + self.activations + self.logits + self.fixed

    def gib(self, value: float | None = None) -> float:
        return (self.total if value is None else value) / GIB


def _quantized_weights(w: Workload, p: Params) -> float:
    assert w.quant_bits is not None
    # bitsandbytes: 64-weight blocks with an fp32 absmax (0.5 bit/weight), or 8-bit absmax plus a second level
    # with double quant (~0.127 bit/weight). Embeddings, lm_head and norms stay in 16 bits.
    constants = 0.127 if w.double_quant else 0.5
    return p.layer_linear * (w.quant_bits + constants) / 8 + (p.total - p.layer_linear) * 2


def model_states(w: Workload, p: Params, trainable: int) -> tuple[float, float, float]:
    """(weights on GPU, trainable states on GPU, offloaded bytes on the node's host), per DeepSpeed's accounting.

    Without DeepSpeed, the HF Trainer trains the parameters in their own dtype: 16-bit weights and gradients
    and Adam moments in the parameter dtype (LoRA: ms-swift's fp32 adapters).
    """
    n = w.world
    frozen = p.total - trainable if not w.full else 0
    frozen_bytes = _quantized_weights(w, p) if w.quant_bits is not None else frozen * w.compute_bytes
    largest = 4 * p.largest_module
    per_node = 1 / w.nodes
    if w.stage == Stage.NONE:
        weight_bytes = w.lora_bytes if not w.full else w.compute_bytes
        states = trainable * (weight_bytes * 2 + w.optimizer_bytes * weight_bytes / 4)
        return frozen_bytes, states, 0.0
    # DeepSpeed: 16-bit copy of the trainable weights + 18 bytes/param of gradients, master weights, moments.
    if w.stage == Stage.ZERO1:
        return frozen_bytes, 2 * trainable + 2 * trainable + 16 * trainable / n, 0.0
    if w.stage == Stage.ZERO2:
        return frozen_bytes, 2 * trainable + 18 * trainable / n, 0.0
    if w.stage == Stage.ZERO2_OFFLOAD:
        host = trainable * max(4 * n, 16) * DEEPSPEED_HOST_BUFFER  # as DeepSpeed's estimator: not split by node
        return frozen_bytes, 2 * trainable, host
    if w.stage == Stage.ZERO3:
        return frozen_bytes / n, largest + 18 * trainable / n, 0.0
    # ZERO3_OFFLOAD (optimizer and parameters offloaded, as ms-swift's preset): only the gathered layer stays.
    host = (trainable * 18 + frozen_bytes) * per_node * DEEPSPEED_HOST_BUFFER
    return 0.0, largest, host


def layer_activation_bytes(w: Workload, adapted: list[str]) -> float:
    """Bytes one token leaves saved for the backward pass in one decoder layer."""
    a = w.arch
    h, q, kv = a.hidden, a.heads * a.head_size, a.kv_heads * a.head_size
    b = w.compute_bytes
    attention = 2 * h + (q + 2 * kv) + 2 * (q + kv) + q + h  # norm in/out, q/k/v, q/k norm + rope, attn out
    if a.experts:
        k, inner = a.experts_per_token, a.expert_intermediate
        mlp = 2 * h + k * h + k * (3 if w.liger else 4) * inner
        extra = a.experts * 8.0  # router logits and probabilities in fp32
    else:
        mlp = 2 * h + (3 if w.liger else 4) * a.intermediate
        extra = 0.0
    total: float = (attention + mlp) * b + extra
    if not w.liger:
        total += 2 * 4 * h  # HF RMSNorm keeps an fp32 copy of its input
    if not w.full:
        inputs = {
            "q_proj": h,
            "k_proj": h,
            "v_proj": h,
            "o_proj": q,
            "gate_proj": h,
            "up_proj": h,
            "down_proj": a.expert_intermediate if a.experts else a.intermediate,
        }
        fan = a.experts_per_token if a.experts else 1
        for name in adapted:
            width = inputs[name] * (fan if name in ("gate_proj", "up_proj", "down_proj") else 1)
            if w.lora_dropout:
                total += width * (w.lora_bytes + 1)  # dropped-out copy and its mask
            elif w.lora_bytes != b:
                total += width * w.lora_bytes  # the input cast to the adapter's dtype
    return total * ACTIVATION_OVERHEAD


def logits_bytes(w: Workload) -> float:
    tokens = w.batch * w.seq
    vocab = w.arch.vocab
    if w.liger:
        # Liger's fused linear cross-entropy: chunks of ~tokens / (vocab / hidden) rows, fp32 logits and gradient.
        chunks = max(1, -(-vocab // w.arch.hidden))
        rows = 1 << max(0, (-(-tokens // chunks) - 1).bit_length())
        return rows * vocab * 4 * 2 + tokens * w.arch.hidden * 4
    # 16-bit logits, their fp32 upcast for the loss, and log-softmax's fp32 output.
    return tokens * vocab * (w.compute_bytes + 4 + 4)


def estimate(w: Workload) -> Estimate:
    p = params(w.arch)
    adapted: list[str]
    if w.full:
        trainable, adapted = p.total, []
    else:
        trainable, adapted = lora_params(w.arch, w.lora_rank, w.lora_targets)
    weights, states, offloaded = model_states(w, p, trainable)
    tokens = w.batch * w.seq
    layer = layer_activation_bytes(w, adapted) * tokens
    logits = logits_bytes(w)
    if w.grad_checkpointing:
        saved = tokens * w.arch.hidden * w.compute_bytes * w.arch.layers
        workset = BACKWARD_WORKSET * layer
        # The logits peak (end of forward) and the recompute peak (backward) do not overlap: the larger counts.
        activations = saved + max(workset - logits, 0.0)
    else:
        activations = layer * w.arch.layers
    fixed = CUDA_CONTEXT_GIB * GIB
    if w.world > 1:
        fixed += DISTRIBUTED_BUFFERS_GIB * GIB
    if w.stage in (Stage.ZERO3, Stage.ZERO3_OFFLOAD):
        fixed += min(ZERO3_MAX_LIVE_PARAMS, 2 * p.layer_linear / w.arch.layers) * w.compute_bytes
    elif w.stage != Stage.NONE:
        fixed += 2 * ZERO_BUCKET_ELEMENTS * w.compute_bytes
    gpus_per_node = w.world // w.nodes
    host = offloaded + gpus_per_node * PROCESS_HOST_GIB * GIB
    return Estimate(weights, states, activations, logits, fixed, host, trainable)
