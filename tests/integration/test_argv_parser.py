"""Every argv the launcher builds is accepted by ms-swift's OWN argument parser (no training).

The model is swapped for the local tiny model (parsing resolves the model); everything else is the
seed scenario's argv as the pod would run it.
"""

from __future__ import annotations

import dataclasses

import pytest

from modelforge.api.finetunejob import Dtype, Method
from tests.launcher_specs import argv_for, finetunejobs

pytestmark = pytest.mark.integration
JOBS = finetunejobs()


def variants():
    for name, spec in JOBS.items():
        yield name, spec
    base = JOBS["tiny-cpu"]
    for method in Method:
        spec = base.model_copy(deep=True)
        spec.method = method
        yield f"tiny-{method.value}", spec
    spec = base.model_copy(deep=True)
    spec.hyperparameters.warmup_steps = 3
    spec.hyperparameters.packing = False
    spec.hyperparameters.dtype = Dtype.FLOAT16
    yield "tiny-warmup-steps-fp16", spec


@pytest.fixture(scope="module")
def swift_parser():
    from swift.arguments import SftArguments
    from swift.utils import parse_args

    return lambda argv: parse_args(SftArguments, argv)


@pytest.mark.parametrize(("name", "spec"), list(variants()), ids=[n for n, _ in variants()])
def test_ms_swift_accepts_every_flag(name, spec, swift_parser, tiny_model, tmp_path):
    spec = spec.model_copy(deep=True)
    spec.model.model_type, spec.model.template = "qwen3", "qwen3"
    argv = argv_for(spec, model=str(tiny_model), device="cpu")
    output = argv.index("--output_dir") + 1
    argv[output] = str(tmp_path / "run")
    args, remaining = swift_parser(argv)
    assert remaining == [], f"ms-swift does not know: {remaining}"
    assert args.tuner_type == ("full" if spec.method == Method.FULL else "lora")
    assert args.gradient_accumulation_steps == int(argv[argv.index("--gradient_accumulation_steps") + 1])
    if "--deepspeed" in argv:
        assert args.deepspeed is not None


def test_the_parser_check_can_fail(swift_parser, tiny_model, tmp_path):
    argv = argv_for(JOBS["tiny-cpu"], model=str(tiny_model), device="cpu")
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "run")
    _, remaining = swift_parser([*argv, "--train_type", "lora"])  # the ms-swift 3.x spelling
    assert remaining == ["--train_type", "lora"]


@pytest.mark.parametrize("method", list(Method))
def test_ms_swift_accepts_the_gpu_performance_switches(method, swift_parser, tiny_model, tmp_path):
    """performance: auto on the trainer image (CUDA, Liger, flash-attn): every switch is a flag ms-swift knows.

    Parsed on this CPU machine, so bf16 is turned off after building (TrainingArguments refuses bf16 without
    a GPU); the switches themselves are parsed as the pod would pass them.
    """
    from modelforge.launcher.argv import LaunchContext, build_sft_argv
    from modelforge.plan.performance import TRAINER_IMAGE
    from modelforge.plan.resolve import resolve

    spec = JOBS["tiny-cpu"].model_copy(deep=True)
    spec.method = method
    spec.hyperparameters.packing = False
    spec.hyperparameters.dtype = Dtype.AUTO
    spec.model.model_type, spec.model.template = "qwen3", "qwen3"
    ctx = LaunchContext(str(tiny_model), tuple(d.source for d in spec.datasets), (), str(tmp_path / "run"), "cuda",
                        capabilities=TRAINER_IMAGE)  # fmt: skip
    argv = build_sft_argv(spec, resolve(spec), ctx)
    assert argv[argv.index("--use_liger_kernel") + 1] == "true"
    assert argv[argv.index("--padding_free") + 1] == "true"
    assert argv[argv.index("--optim") + 1] == "adamw_torch_fused"
    argv[argv.index("--bf16") + 1] = "false"
    argv[argv.index("--torch_dtype") + 1] = "float32"
    # ms-swift asserts liger-kernel is importable while parsing; it is not installed on this CPU machine.
    argv[argv.index("--use_liger_kernel") + 1] = "false"
    args, remaining = swift_parser(argv)
    assert remaining == []
    assert "use_liger_kernel" in {f.name for f in dataclasses.fields(type(args))}
    assert args.padding_free is True and args.attn_impl == "flash_attn"
    if method != Method.FULL:
        assert args.lora_dropout == 0
        assert args.lora_dtype == "bfloat16"
