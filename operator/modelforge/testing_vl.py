"""A tiny random Qwen2.5-VL-architecture model (vision tower, image processor, vision tokens), built locally.

`modelforge tiny-model --vision DIR` writes it; the multimodal integration test trains it with the real
`swift sft` on generated images on a CPU. Weights are random: answers are noise, the pipeline is real.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .testing import CHAT_TEMPLATE, SPECIAL_TOKENS, _corpus

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 220, 40)}


# Qwen's ids for its special tokens. ms-swift's Qwen2-VL templates hard-code 151655/151656 for the image
# and video pads (Qwen2VLTemplate.image_token_id) to expand a prompt's <image> into one pad per vision
# feature, so a tokenizer with other ids trains (ms-swift builds the embeddings itself) but cannot infer.
QWEN_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
            "<|vision_end|>": 151653, "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656,
            "<think>": 151667, "</think>": 151668}  # fmt: skip
QWEN_VOCAB = 151936


def build_tiny_vision_model(path: Path, *, hidden: int = 64, layers: int = 2, merges_vocab: int = 2048) -> Path:
    """Write a random Qwen2_5_VLForConditionalGeneration (~40 MB: Qwen's 152k-row embedding, for its token
    ids), its processor and tokenizer to `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specials = [*SPECIAL_TOKENS, *VISION_TOKENS]
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=merges_vocab,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trained.train_from_iterator([*_corpus(), *(f"The picture is {c}." for c in COLOURS)], trainer=trainer)
    bpe = json.loads(trained.to_str())["model"]
    vocab = {**bpe["vocab"], **{token: QWEN_IDS[token] for token in specials}}
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in bpe["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(specials)  # already in the vocabulary: they keep Qwen's ids
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )
    # 28x28 pixels per vision token after the 2x2 merge; small images keep the CPU run short.
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2)
    video_processor = Qwen2VLVideoProcessor(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=fast, video_processor=video_processor, chat_template=CHAT_TEMPLATE
    )
    processor.save_pretrained(path)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": QWEN_VOCAB,
            "hidden_size": hidden,
            "intermediate_size": hidden * 2,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "tie_word_embeddings": True,
            "bos_token_id": None,
            "eos_token_id": QWEN_IDS["<|im_end|>"],
            "pad_token_id": QWEN_IDS["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": hidden,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        image_token_id=QWEN_IDS["<|image_pad|>"],
        video_token_id=QWEN_IDS["<|video_pad|>"],
        vision_start_token_id=QWEN_IDS["<|vision_start|>"],
        vision_end_token_id=QWEN_IDS["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(path)
    return path


def write_image_dataset(directory: Path, count: int = 8, seed: int = 0) -> Path:
    """`count` solid-colour PNGs and a messages dataset asking for their colour; returns the JSONL path."""
    from PIL import Image

    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        name, rgb = rng.choice(sorted(COLOURS.items()))
        Image.new("RGB", (56, 56), rgb).save(directory / "images" / f"{index:03d}.png")
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": "<image>What colour is the picture?"},
                    {"role": "assistant", "content": f"The picture is {name}."},
                ],
                "images": [f"images/{index:03d}.png"],
            }
        )
    data = directory / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return data
