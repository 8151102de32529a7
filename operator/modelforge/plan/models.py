"""Architectures of well-known models (from their published config.json), or read from a local config.json.

Used to check tensor parallelism against attention heads, to size startup probes, and by the planner.
An id that is neither local nor in the table is "unknown": callers say so rather than guess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Architecture:
    name: str
    params_b: float  # total parameters, billions
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    experts: int = 0  # MoE: routed experts per layer (0 = dense)
    experts_per_token: int = 0
    expert_intermediate: int = 0
    head_dim: int = 0  # 0: hidden // heads (Qwen3 uses 128 whatever the width)

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden // self.heads


# Qwen2-VL, Qwen2.5-VL, Qwen3-VL, InternVL, LLaVA...: a text table entry would undercount them.
VISION_LANGUAGE = re.compile(r"(^|[-_.])(vl|llava|internvl|omni)([-_.0-9]|$)", re.IGNORECASE)

KNOWN: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("qwen3-0.6b", 0.60, 1024, 28, 16, 8, 3072, 151936, tied_embeddings=True, head_dim=128),
        Architecture("qwen3-1.7b", 1.72, 2048, 28, 16, 8, 6144, 151936, tied_embeddings=True, head_dim=128),
        Architecture("qwen3-4b", 4.02, 2560, 36, 32, 8, 9728, 151936, tied_embeddings=True, head_dim=128),
        Architecture("qwen3-8b", 8.19, 4096, 36, 32, 8, 12288, 151936, head_dim=128),
        Architecture("qwen3-14b", 14.77, 5120, 40, 40, 8, 17408, 151936, head_dim=128),
        Architecture("qwen3-32b", 32.76, 5120, 64, 64, 8, 25600, 151936, head_dim=128),
        Architecture(
            "qwen3-30b-a3b",
            30.53,
            2048,
            48,
            32,
            4,
            6144,
            151936,
            experts=128,
            experts_per_token=8,
            expert_intermediate=768,
            head_dim=128,
        ),
        Architecture("qwen2.5-7b", 7.62, 3584, 28, 28, 4, 18944, 152064),
        Architecture("llama-2-7b", 6.74, 4096, 32, 32, 32, 11008, 32000),
        Architecture("llama-2-13b", 13.02, 5120, 40, 40, 40, 13824, 32000),
        Architecture("chatglm3-6b", 6.24, 4096, 28, 32, 2, 13696, 65024),
    )
}


def lookup(model_id: str) -> Architecture | None:
    """The table entry for a hub id such as Qwen/Qwen3-8B-Base or meta-llama/Llama-2-13b-chat-hf."""
    name = model_id.rstrip("/").rsplit("/", 1)[-1].lower()
    for key in sorted(KNOWN, key=len, reverse=True):
        if name == key or name.startswith(key + "-"):
            return KNOWN[key]
    return None


def from_config(path: Path) -> Architecture | None:
    """An Architecture from a local model directory's config.json (None when it cannot be read)."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    text = config.get("text_config", config)
    try:
        hidden = int(text["hidden_size"])
        layers = int(text["num_hidden_layers"])
        heads = int(text["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    kv = int(text.get("num_key_value_heads") or text.get("multi_query_group_num") or heads)
    intermediate = int(text.get("intermediate_size") or text.get("ffn_hidden_size") or 4 * hidden)
    vocab = int(text.get("vocab_size") or text.get("padded_vocab_size") or 0)
    experts = int(text.get("num_experts") or 0)
    head_dim = int(text.get("head_dim") or hidden // heads)
    attention = hidden * head_dim * (heads * 2 + kv * 2)
    mlp = 3 * hidden * (int(text.get("moe_intermediate_size") or 0) * experts if experts else intermediate)
    embeddings = vocab * hidden * (1 if text.get("tie_word_embeddings") else 2)
    params = (layers * (attention + mlp) + embeddings) / 1e9
    return Architecture(
        name=path.name, params_b=round(params, 3), hidden=hidden, layers=layers, heads=heads, kv_heads=kv,
        intermediate=intermediate, vocab=vocab, tied_embeddings=bool(text.get("tie_word_embeddings")),
        experts=experts, experts_per_token=int(text.get("num_experts_per_tok") or 0),
        expert_intermediate=int(text.get("moe_intermediate_size") or 0), head_dim=head_dim,
    )  # fmt: skip


def architecture(source: str) -> Architecture | None:
    """From a local directory when `source` is one, else from the table."""
    path = Path(source)
    if path.is_dir():
        return from_config(path)
    return lookup(source)


def guess(source: str) -> tuple[Architecture | None, str]:
    """The architecture of a cluster model source without reading it: the table, by id or directory name.

    Returns the architecture (or None) and a note saying how it was found or why it was not.
    """
    if VISION_LANGUAGE.search(source.rstrip("/").rsplit("/", 1)[-1]):
        return None, (
            f"{source} is a vision-language model: its vision tower's parameters and per-image activations are "
            "not in the table yet, so memory is not planned; size resources.gpuMemory from a measured run"
        )
    if source.startswith("pvc://"):
        name = source.rstrip("/").rsplit("/", 1)[-1]
        arch = lookup(name)
        if arch is None:
            return None, f"the directory name of {source} is not a known model"
        return arch, f"architecture {arch.name} assumed from the directory name of {source}"
    arch = lookup(source)
    return arch, "" if arch else f"{source} is not in the table of known architectures"
