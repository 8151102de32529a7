"""A tiny random Qwen3-architecture model, its tokenizer and a chat dataset, built locally (no hub).

Used by `modelforge tiny-model`, the quickstart and the integration tests: the real ms-swift trains it
on a CPU in seconds. The weights are random, so answers are noise; everything else is real.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# Qwen-style ChatML; ms-swift uses its own qwen3 template for training, this one serves plain HF users.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SUBJECTS = ["order", "invoice", "password", "delivery", "refund", "account", "plan", "device", "ticket", "address"]
_ACTIONS = ["track", "cancel", "change", "reset", "update", "find", "renew", "return", "open", "close"]


def chat_rows(count: int, seed: int = 0) -> list[dict]:
    """Deterministic customer-service conversations in the messages format."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        action, subject = rng.choice(_ACTIONS), rng.choice(_SUBJECTS)
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "You are a helpful support assistant."},
                    {"role": "user", "content": f"How do I {action} my {subject}?"},
                    {
                        "role": "assistant",
                        "content": f"To {action} your {subject}, open Settings, choose {subject.title()}, "
                        f"then press {action.title()}. Anything else?",
                    },
                ]
            }
        )
    return rows


def _corpus() -> list[str]:
    lines = []
    for row in chat_rows(400, seed=1):
        lines += [m["content"] for m in row["messages"]]
    lines += ["The quick brown fox jumps over the lazy dog.", "What is the capital of France? Paris."] * 20
    return lines


def build_tokenizer(path: Path, vocab_size: int = 2048) -> None:
    """Train a byte-level BPE tokenizer with Qwen's special tokens and save it as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)


def build_tiny_model(path: Path, *, hidden: int = 64, layers: int = 2, vocab_size: int = 2048, seed: int = 0) -> Path:
    """Write a random Qwen3ForCausalLM (< 1 MB) and its tokenizer to `path`; returns `path`."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    build_tokenizer(path, vocab_size)
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=SPECIAL_TOKENS.index("<|im_end|>"),
        pad_token_id=SPECIAL_TOKENS.index("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.save_pretrained(path)
    return path


def write_chat_dataset(path: Path, count: int = 64, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in chat_rows(count, seed)))
    return path


def write_eval_dataset(path: Path, count: int = 20, seed: int = 7) -> Path:
    """Held-out questions of the chat dataset's domain (another seed) with their reference answers, as
    query/response rows: what a FineTuneJob's spec.evaluation reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in chat_rows(count, seed):
        user, answer = (m["content"] for m in row["messages"][1:])
        rows.append({"query": user, "response": answer})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
