"""What the GPU benchmark trains: the model shape, the generated chats, the FineTuneJob specs, the FLOP count.

Shared by the orchestrator (bench.py, which never imports torch) and the step processes (steps.py).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Qwen3-8B's published config.json; "tiny" keeps every feature (GQA, untied lm_head, head_dim) at a toy size.
SHAPES: dict[str, dict[str, int]] = {
    "qwen3-8b": {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 2048},
}  # fmt: skip
TOKENIZER_VOCAB = 2048  # the locally trained BPE; token ids stay below it, the model's logits span its own vocab

WORDS = ["order", "refund", "invoice", "shipping", "account", "password", "delivery", "warranty", "upgrade",
         "battery", "screen", "cable", "printer", "network", "signal", "weather", "garden", "kitchen", "travel",
         "ticket", "station", "museum", "river", "bridge"]  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One launcher configuration: a `modelforge run` of a FineTuneJob on the benchmark's model and data."""

    name: str
    title: str
    method: str  # lora | qlora
    rank: int
    batch: int
    performance: str  # auto | none
    steps: int
    skip: int  # first steps left out of the timing


def build_model(shape: str, device: str, target: Path) -> Path:
    """A random-initialised Qwen3 of `shape`, built in bf16 on `device`, plus a local tokenizer.

    bf16 on the CPU too (the rehearsal), so both take this same path; the launcher loads it as float32 there.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from modelforge.testing import SPECIAL_TOKENS, build_tokenizer

    target.mkdir(parents=True, exist_ok=True)
    build_tokenizer(target, TOKENIZER_VOCAB)  # Qwen's special tokens and a ChatML template, no hub
    dtype = torch.bfloat16
    config = Qwen3Config(**SHAPES[shape], tie_word_embeddings=False, max_position_embeddings=4096,
                         bos_token_id=None, eos_token_id=SPECIAL_TOKENS.index("<|im_end|>"),
                         pad_token_id=SPECIAL_TOKENS.index("<|endoftext|>"), dtype=dtype)  # fmt: skip
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise directly in bf16 on the GPU: no 33 GB fp32 detour
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(target)
    return target


def write_data(path: Path, tokenizer_dir: Path, rows: int, seq: int, seed: int = 7) -> list[int]:
    """Chats of random words, each 60-100 % of `seq` tokens with the chat template (none is dropped).

    Returns each row's token count. Seeded `random.Random`, so every machine writes the same file.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rng = random.Random(seed)
    lengths = []
    with path.open("w") as f:
        for _ in range(rows):
            target = rng.randint(int(seq * 0.6), seq - 8)
            words = [rng.choice(WORDS) for _ in range(seq)]
            cut = len(words) // 4
            while True:
                messages = [{"role": "user", "content": " ".join(words[:cut])},
                            {"role": "assistant", "content": " ".join(words[cut:])}]  # fmt: skip
                length = len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
                if length <= target:
                    break
                words = words[: max(8, int(len(words) * min(0.97, target / length)))]
                cut = len(words) // 4
            lengths.append(length)
            f.write(json.dumps({"messages": messages}) + "\n")
    return lengths


def finetunejob(run: Run, model: Path, data: Path, seq: int) -> dict[str, Any]:
    """The FineTuneJob a user would apply for this run (the seed QLoRA case: nf4, double quant, bf16 compute)."""
    spec: dict[str, Any] = {
        "model": {"source": str(model), "modelType": "qwen3", "template": "qwen3"},
        "method": run.method,
        "lora": {"rank": run.rank, "alpha": 2 * run.rank, "targetModules": ["all-linear"]},
        "datasets": [{"source": str(data), "format": "messages"}],
        "hyperparameters": {"maxSteps": run.steps, "batchSizePerDevice": run.batch, "maxLength": seq,
                            "gradientCheckpointing": True, "loggingSteps": 1, "learningRate": 1e-4},
        "checkpointing": {"saveSteps": 100000},
        "performance": run.performance,
        # The final checkpoint ms-swift writes after the last step: adapter only (no optimizer state), so a
        # QLoRA r64 run does not spend seconds writing 2 GB after the timed window.
        "extraArgs": ["--save_only_model", "true"],
    }  # fmt: skip
    if run.method == "qlora":
        spec["quantization"] = {"bits": 4, "type": "nf4", "doubleQuant": True, "computeDtype": "bfloat16"}
    return {"apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": run.name},
            "spec": spec}  # fmt: skip


def flops_per_token(model_dir: Path, seq: float, rank: int) -> float:
    """LoRA FLOPs per trained token: 4N + 3A + 6N_lora (N: matmul parameters incl. lm_head; A: attention)."""
    from modelforge.plan.memory import lora_params, params
    from modelforge.plan.models import from_config

    arch = from_config(model_dir)
    if arch is None:
        raise ValueError(f"{model_dir}/config.json could not be read")
    attention = 2 * arch.layers * seq * arch.heads * arch.head_size
    return 4 * params(arch).per_token_matmul + 3 * attention + 6 * lora_params(arch, rank, ("all-linear",))[0]
