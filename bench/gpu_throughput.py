"""Training throughput: the launcher with `performance: auto` against a plain transformers + peft Trainer.

Both train the same random-initialised model (Qwen3-8B shape by default) on the same generated chats with
the same batch, sequence cap, LoRA shape (r16 all-linear) and gradient checkpointing, in ONE call, and
print tokens/s (steady state: the first steps are skipped), MFU (4N + 3A + 6N_lora FLOPs per token
against --peak-tflops) and peak memory. Goal (issue #7): >= 2x the baseline (on record: ~3.55k tokens/s,
MFU ~14 % on one H100).

On a lent H100 (../shared/GPU.md for the wheels; pyyaml and common-expression-language travel too):
    PYTHONPATH=/tmp/site:$PWD/operator:$PWD python3 bench/gpu_throughput.py --steps 30 --out $OUT
Smoke test on a CPU (what CI runs): python bench/gpu_throughput.py --shape tiny --device cpu --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

WORDS = [
    "order",
    "refund",
    "invoice",
    "shipping",
    "account",
    "password",
    "delivery",
    "warranty",
    "upgrade",
    "battery",
    "screen",
    "cable",
    "printer",
    "network",
    "signal",
    "weather",
    "garden",
    "kitchen",
    "travel",
    "ticket",
    "station",
    "museum",
    "river",
    "bridge",
]


def build_model(shape: str, device: str, out: Path) -> Path:
    """A random Qwen3 of the given shape plus the project's locally trained tokenizer (no hub)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from modelforge.testing import build_tiny_model

    tiny = build_tiny_model(out / "tiny")  # tokenizer with the Qwen special tokens and a ChatML template
    if shape == "tiny":
        return tiny
    config = Qwen3Config(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=False,
                         max_position_embeddings=4096, torch_dtype="bfloat16")  # fmt: skip
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    target = out / "qwen3-8b-shape"
    model.save_pretrained(target)
    for f in tiny.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")):
            (target / f.name).write_bytes(f.read_bytes())
    del model
    return target


def write_data(path: Path, model: Path, rows: int, seq: int, seed: int = 7) -> None:
    """Chats of random words, each 60-100 % of `seq` tokens with the chat template (none is dropped)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    rng = random.Random(seed)
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
            f.write(json.dumps({"messages": messages}) + "\n")


def flops_per_token(model_dir: Path, seq: float, rank: int) -> float:
    from modelforge.plan.memory import lora_params, params
    from modelforge.plan.models import from_config

    arch = from_config(model_dir)
    assert arch is not None
    p = params(arch)
    attention = 2 * arch.layers * seq * arch.heads * arch.head_size
    return 4 * p.per_token_matmul + 3 * attention + 6 * lora_params(arch, rank, ("all-linear",))[0]


def run_launcher(model: Path, data: Path, args: argparse.Namespace, work: Path) -> dict[str, float]:
    spec = {
        "apiVersion": "modelforge.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "bench"},
        "spec": {
            "model": {"source": str(model), "modelType": "qwen3", "template": "qwen3"},
            "method": "lora",
            "lora": {"rank": args.rank, "alpha": 2 * args.rank},
            "datasets": [{"source": str(data), "format": "messages"}],
            "hyperparameters": {"maxSteps": args.steps, "batchSizePerDevice": args.batch, "maxLength": args.seq,
                                "loggingSteps": 1, "learningRate": 1e-4},
            "checkpointing": {"saveSteps": 100000},
            "performance": "auto",
        },
    }  # fmt: skip
    spec_path = work / "bench.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = work / "launcher-out"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "modelforge.cli", "run", str(spec_path), "--output", str(out)], check=True)
    wall = time.perf_counter() - started
    log = [json.loads(line) for line in (out / "run" / "logging.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in log if "train_speed(s/it)" in r and "/" in str(r.get("global_step/max_steps", ""))]
    # ms-swift logs the mean s/it since the start: steady state = (elapsed_N - elapsed_k) / (N - k).
    n, k = len(steps), min(args.skip, len(steps) - 2)
    elapsed_n = steps[-1]["train_speed(s/it)"] * n
    elapsed_k = steps[k - 1]["train_speed(s/it)"] * k if k else 0.0
    seconds_per_step = (elapsed_n - elapsed_k) / (n - k)
    memory = max((float(str(r["memory(GiB)"]).split()[0]) for r in log if "memory(GiB)" in r), default=0.0)
    return {"seconds_per_step": seconds_per_step, "peak_gib": memory, "wall_s": wall}


def run_baseline(model: Path, data: Path, args: argparse.Namespace, work: Path) -> dict[str, float]:
    """transformers.Trainer + peft LoRA with their defaults; the same rows, template, batch and length cap."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    cuda = args.device == "cuda"
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = [json.loads(line)["messages"] for line in data.read_text().splitlines()]
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
    net = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(args.device)
    net = get_peft_model(net, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear",
                                         task_type="CAUSAL_LM"))  # fmt: skip
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    training = TrainingArguments(output_dir=str(work / "baseline"), per_device_train_batch_size=args.batch,
                                 max_steps=args.steps, gradient_checkpointing=True, bf16=cuda, report_to="none",
                                 save_strategy="no", logging_steps=1000, remove_unused_columns=False,
                                 use_cpu=not cuda, dataloader_drop_last=True)  # fmt: skip
    Trainer(model=net, args=training, train_dataset=dataset, data_collator=collate, callbacks=[Timer()]).train()
    steady = times[args.skip :] or times
    tokens = counts[args.skip : args.skip + len(steady)] or counts
    peak = torch.cuda.max_memory_reserved() / 2**30 if cuda else 0.0
    return {"seconds_per_step": statistics.median(steady), "tokens_per_step": statistics.mean(tokens), "peak_gib": peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("qwen3-8b", "tiny"), default="qwen3-8b")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=int, default=5, help="first steps left out of the timing")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--peak-tflops", type=float, default=800.0)
    parser.add_argument("--work", default="bench-gpu-work")
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args()
    if args.shape == "tiny":
        args.seq = min(args.seq, 128)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = build_model(args.shape, args.device, work)
    data = work / "chats.jsonl"
    write_data(data, model, rows=args.batch * (args.steps + 2), seq=args.seq)

    baseline = run_baseline(model, data, args, work)
    tokens_per_step = baseline["tokens_per_step"]  # same rows in the same order: the same real tokens per step
    launcher = run_launcher(model, data, args, work)
    flops = flops_per_token(model, tokens_per_step / args.batch, args.rank)
    rows = []
    for name, result in (("transformers+peft Trainer (baseline)", baseline), ("launcher, performance: auto", launcher)):
        tps = tokens_per_step / result["seconds_per_step"]
        mfu = tps * flops / (args.peak_tflops * 1e12)
        rows.append({"run": name, "tokens_per_s": round(tps, 1), "mfu": round(mfu, 4),
                     "s_per_step": round(result["seconds_per_step"], 4),
                     "peak_gib": round(result["peak_gib"], 2)})  # fmt: skip
    speedup = rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"]
    print(f"\nshape {args.shape}, batch {args.batch}, seq <= {args.seq}, LoRA r{args.rank} all-linear, "
          f"{tokens_per_step:.0f} real tokens/step, {args.steps} steps ({args.skip} skipped), "
          f"device {args.device}")  # fmt: skip
    print(f"{'run':<40}{'tokens/s':>10}{'MFU':>8}{'s/step':>9}{'peak GiB':>10}")
    for r in rows:
        print(f"{r['run']:<40}{r['tokens_per_s']:>10.0f}{r['mfu']:>8.1%}{r['s_per_step']:>9.3f}{r['peak_gib']:>10.1f}")
    print(f"speed-up: {speedup:.2f}x (goal >= 2x)")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        Path(args.out, "gpu_throughput.json").write_text(json.dumps({"rows": rows, "speedup": speedup}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
