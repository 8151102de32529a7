"""FineTuneJob spec -> the `swift sft` argument list for ms-swift 4.6 (pure: no I/O, no environment).

Every flag here is checked against ms-swift's own argument parser in tests/integration/test_argv_parser.py.
ms-swift 4.x names worth knowing: `--tuner_type` (v3: --train_type), `--check_model false` (offline),
`--add_version false` (a fixed output_dir, so restarts find their checkpoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..api.common import Dtype, Hub
from ..api.finetunejob import DatasetSpec, DeepSpeed, FineTuneJobSpec, LoraSpec, Method, QuantizationSpec
from ..plan.performance import DEFAULT_LORA_DROPOUT, DEFAULT_OPTIMIZER, Capabilities, switches
from ..plan.resolve import Resolved


@dataclass(frozen=True)
class LaunchContext:
    """What the launcher knows at run time that the spec does not say."""

    model: str  # hub id or local path
    datasets: tuple[str, ...]  # resolved sources (paths or hub ids), same order as spec.datasets
    val_datasets: tuple[str, ...]
    output_dir: str
    device: str  # "cuda" or "cpu"
    resume_from: str | None = None
    capabilities: Capabilities | None = None  # optional kernels found; None: nothing beyond the device

    def caps(self) -> Capabilities:
        return self.capabilities or Capabilities(cuda=self.device == "cuda")


def _bool(value: bool) -> str:
    return "true" if value else "false"


def dataset_arg(source: str, spec: DatasetSpec) -> str:
    """ms-swift's `id_or_path[:subset][#N]`."""
    arg = source
    if spec.subset:
        arg += f":{spec.subset}"
    if spec.samples:
        arg += f"#{spec.samples}"
    return arg


def _dtype_args(dtype: Dtype, device: str) -> list[str]:
    if dtype == Dtype.AUTO:
        dtype = Dtype.BFLOAT16 if device == "cuda" else Dtype.FLOAT32
    return [
        "--torch_dtype", dtype.value,
        "--bf16", _bool(dtype == Dtype.BFLOAT16),
        "--fp16", _bool(dtype == Dtype.FLOAT16),
    ]  # fmt: skip


def _method_args(spec: FineTuneJobSpec) -> list[str]:
    if spec.method == Method.FULL:
        return ["--tuner_type", "full"]
    lora = spec.lora or LoraSpec()
    args = [
        "--tuner_type", "lora",
        "--lora_rank", str(lora.rank),
        "--lora_alpha", str(lora.alpha),
        "--lora_dropout", str(DEFAULT_LORA_DROPOUT if lora.dropout is None else lora.dropout),
        "--target_modules", *lora.target_modules,
    ]  # fmt: skip
    return args + quant_args(spec)


def quant_args(spec: FineTuneJobSpec) -> list[str]:
    """method qlora: how ms-swift quantizes the base weights as it loads them (for `swift sft` and, so that the
    evaluation fits the same GPU, for `swift infer`); nothing for the other methods."""
    if spec.method != Method.QLORA:
        return []
    quant = spec.quantization or QuantizationSpec()
    args = ["--quant_method", "bnb", "--quant_bits", str(quant.bits)]
    if quant.bits == 4:
        args += [
            "--bnb_4bit_quant_type", quant.type.value,
            "--bnb_4bit_use_double_quant", _bool(quant.double_quant),
            "--bnb_4bit_compute_dtype", quant.compute_dtype.value,
        ]  # fmt: skip
    return args


def build_sft_argv(spec: FineTuneJobSpec, resolved: Resolved, ctx: LaunchContext) -> list[str]:
    """The full `swift sft` argv (without the program name)."""
    hp = spec.hyperparameters
    args = ["--model", ctx.model, "--check_model", "false", "--use_hf", _bool(spec.model.hub == Hub.HUGGINGFACE)]
    if spec.model.model_type:
        args += ["--model_type", spec.model.model_type]
    if spec.model.template:
        args += ["--template", spec.model.template]
    if spec.model.revision:
        args += ["--model_revision", spec.model.revision]
    args += _method_args(spec)
    if spec.multimodal:
        mm = spec.multimodal
        args += [
            "--freeze_vit", _bool(mm.freeze_vit),
            "--freeze_aligner", _bool(mm.freeze_aligner),
            "--freeze_llm", _bool(mm.freeze_llm),
        ]  # fmt: skip
        if mm.max_pixels:
            args += ["--max_pixels", str(mm.max_pixels)]

    args += ["--dataset", *(dataset_arg(s, d) for s, d in zip(ctx.datasets, spec.datasets, strict=True))]
    validation = spec.validation
    if validation and validation.datasets:
        val_args = (dataset_arg(s, d) for s, d in zip(ctx.val_datasets, validation.datasets, strict=True))
        args += ["--val_dataset", *val_args, "--split_dataset_ratio", "0"]
    else:
        ratio = validation.split_ratio if validation and validation.split_ratio else 0
        args += ["--split_dataset_ratio", str(ratio)]
    if validation:
        args += [
            "--eval_strategy",
            "steps",
            "--eval_steps",
            str(validation.eval_steps or spec.checkpointing.save_steps),
        ]
    else:
        args += ["--eval_strategy", "no"]

    args += ["--max_steps", str(hp.max_steps)] if hp.max_steps else ["--num_train_epochs", str(hp.epochs)]
    args += [
        "--learning_rate", str(hp.learning_rate),
        "--per_device_train_batch_size", str(hp.batch_size_per_device),
        "--per_device_eval_batch_size", str(hp.batch_size_per_device),
        "--gradient_accumulation_steps", str(resolved.gradient_accumulation),
        "--max_length", str(hp.max_length),
        "--lr_scheduler_type", hp.scheduler.value,
        "--optim", hp.optimizer.value if hp.optimizer else DEFAULT_OPTIMIZER,
        "--weight_decay", str(hp.weight_decay),
        "--max_grad_norm", str(hp.max_grad_norm),
        "--seed", str(hp.seed),
        "--gradient_checkpointing", _bool(hp.gradient_checkpointing),
        "--packing", _bool(hp.packing),
        "--logging_steps", str(hp.logging_steps),
    ]  # fmt: skip
    if hp.warmup_steps is not None:
        args += ["--warmup_steps", str(hp.warmup_steps)]
    else:
        args += ["--warmup_ratio", str(hp.warmup_ratio if hp.warmup_ratio is not None else 0.05)]
    args += _dtype_args(hp.dtype, ctx.device)
    if resolved.deepspeed != DeepSpeed.NONE:
        args += ["--deepspeed", resolved.deepspeed.value]
    # The collective timeout launcher/rank.py joins the group with (ms-swift's default is 18,000,000 s).
    args += ["--ddp_timeout", str(spec.distributed.collective_timeout_seconds)]
    if ctx.device == "cpu":
        # Without use_cpu, transformers on a machine with no GPU ignores the process group the ranks joined
        # (parallel_mode is not DISTRIBUTED): every rank would train its own model on its shard of the data,
        # gradients never averaged. Found by tests/integration/test_distributed.py.
        args += ["--use_cpu", "true"]  # accelerate then takes gloo for a world of several processes

    args += [
        "--output_dir", ctx.output_dir,
        "--add_version", "false",
        "--save_strategy", "steps",
        "--save_steps", str(spec.checkpointing.save_steps),
        "--save_total_limit", str(spec.checkpointing.keep_last),
        "--report_to", "none",
    ]  # fmt: skip
    if ctx.resume_from:
        args += ["--resume_from_checkpoint", ctx.resume_from]
    for switch in switches(spec, resolved.deepspeed, ctx.caps()):
        for flag, value in switch.flags:
            _set_flag(args, flag, value)
    args += list(spec.extra_args or ())
    return args


def _set_flag(args: list[str], flag: str, value: str) -> None:
    """Give a single-valued flag this value: replaced in place when present, else appended."""
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]


def flag_values(argv: Sequence[str], flag: str) -> list[str]:
    """The values following `flag` in an argv (for tests and summaries)."""
    if flag not in argv:
        return []
    start = list(argv).index(flag) + 1
    values = []
    for item in argv[start:]:
        if item.startswith("--"):
            break
        values.append(item)
    return values
