"""The benchmark's steps that need torch, each run by bench.py as its own process (with its own time limit).

    python bench/gpu/steps.py preflight --result R.json
    python bench/gpu/steps.py build --shape qwen3-8b --device cuda --work W --rows 256 --seq 1024 --result R.json
    python bench/gpu/steps.py baseline --model M --data D --device cuda --batch 4 --seq 1024 --rank 16 \
        --steps 25 --skip 5 --result R.json

Each writes its result as JSON to --result; peak memory comes from probe/sitecustomize.py (bench.py sets it up).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from workload import build_model, write_data

# What the GPU run needs beyond the launcher's CPU path: Liger (performance: auto on CUDA), bitsandbytes' CUDA 13
# library (QLoRA) and DeepSpeed. The CPU rehearsal runs none of Liger's kernels nor that library, so the
# preflight step (on both) imports them, patches a small Qwen3 with Liger and looks for the library.
GPU_PATH_MODULES = ("swift.pipelines", "liger_kernel.transformers", "bitsandbytes", "deepspeed", "peft", "trl",
                    "datasets", "modelforge.cli", "modelforge.launcher.local", "modelforge.plan.capacity")  # fmt: skip
VERSIONS = ("torch", "transformers", "peft", "accelerate", "ms-swift", "trl", "datasets", "liger-kernel",
            "bitsandbytes", "deepspeed", "pydantic", "tokenizers", "triton")  # fmt: skip


def preflight(args: argparse.Namespace) -> dict[str, Any]:
    """Import every module the steps need, from the carried set; report versions and the device."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    for name in GPU_PATH_MODULES:
        importlib.import_module(name)
    patch_liger()
    import bitsandbytes

    libraries = sorted(p.name for p in Path(bitsandbytes.__file__).parent.glob("libbitsandbytes_*.so"))
    if not any(name.startswith("libbitsandbytes_cuda13") for name in libraries):
        raise RuntimeError(f"the carried bitsandbytes has no CUDA 13 library (torch is cu130): {libraries}")
    versions = {}
    for name in VERSIONS:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "missing"
    cuda = torch.cuda.is_available()
    return {"python": sys.version.split()[0], "versions": versions, "cuda": cuda, "bitsandbytes_libraries": libraries,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "device_memory_gib": torch.cuda.mem_get_info()[1] / 2**30 if cuda else 0.0}  # fmt: skip


def patch_liger() -> None:
    """What `--use_liger_kernel true` does before the first step, on a small Qwen3 with LoRA (nothing runs).

    ms-swift patches Liger's loss (swift/trainers/arguments.py), then transformers' Trainer swaps the model's
    modules for Liger's (transformers/integrations/liger.py): a Liger that does not know this transformers'
    Qwen3 classes fails here, not on the GPU.
    """
    from peft import LoraConfig, get_peft_model
    from swift.trainers.arguments import TrainingArguments
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from transformers.integrations.liger import apply_liger_kernel

    TrainingArguments._patch_liger_kernel()
    config = Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, vocab_size=256)  # fmt: skip
    model = get_peft_model(Qwen3ForCausalLM(config), LoraConfig(r=4, target_modules="all-linear"))
    apply_liger_kernel(model, None)
    norm = model.base_model.model.model.norm._get_name()  # Liger rebinds forward and the name on the instance
    if norm != "LigerRMSNorm":
        raise RuntimeError(f"Liger did not patch Qwen3: its final norm is still {norm}")


def build(args: argparse.Namespace) -> dict[str, Any]:
    model = build_model(args.shape, args.device, Path(args.work) / "model")
    data = Path(args.work) / "chats.jsonl"
    lengths = write_data(data, model, rows=args.rows, seq=args.seq)
    return {"model": str(model), "data": str(data), "rows": len(lengths), "mean_tokens": statistics.mean(lengths)}


def baseline(args: argparse.Namespace) -> dict[str, Any]:
    """transformers.Trainer + peft LoRA with their defaults; the same rows, template, batch and length cap."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    cuda = args.device == "cuda"
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = [json.loads(line)["messages"] for line in Path(args.data).read_text().splitlines()]
    encoded = [tokenizer.apply_chat_template(m, tokenize=True, return_dict=False)[: args.seq] for m in rows]
    dataset = [{"input_ids": ids, "labels": ids} for ids in encoded]
    counts: list[int] = []

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        longest = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), longest), tokenizer.pad_token_id or 0)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for i, b in enumerate(batch):
            ids[i, : len(b["input_ids"])] = torch.tensor(b["input_ids"])
            mask[i, : len(b["input_ids"])] = 1
        counts.append(int(mask.sum()))
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):  # type: ignore[no-untyped-def]
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):  # type: ignore[no-untyped-def]
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)

    dtype = torch.bfloat16 if cuda else torch.float32
    net = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, device_map=args.device)  # straight to the GPU
    net = get_peft_model(net, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear",
                                         task_type="CAUSAL_LM"))  # fmt: skip
    training = TrainingArguments(output_dir=str(Path(args.result).parent / "baseline"),
                                 per_device_train_batch_size=args.batch, max_steps=args.steps,
                                 gradient_checkpointing=True, bf16=cuda, report_to="none", save_strategy="no",
                                 logging_steps=1000, remove_unused_columns=False, use_cpu=not cuda,
                                 dataloader_drop_last=True)  # fmt: skip
    Trainer(model=net, args=training, train_dataset=dataset, data_collator=collate, callbacks=[Timer()]).train()
    steady = times[args.skip :] or times
    tokens = counts[args.skip : args.skip + len(steady)] or counts
    return {"step_seconds": steady, "tokens_per_step": statistics.mean(tokens)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("preflight", "build", "baseline"))
    parser.add_argument("--result", required=True, help="where to write the step's JSON result")
    parser.add_argument("--shape", default="qwen3-8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--work")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--skip", type=int, default=5)
    args = parser.parse_args()
    result = {"preflight": preflight, "build": build, "baseline": baseline}[args.step](args)
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
