"""Every argv the launcher builds is accepted by ms-swift's OWN argument parser (no training).

The model is swapped for the local tiny model (parsing resolves the model); everything else is the
seed scenario's argv as the pod would run it.
"""

from __future__ import annotations

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
