"""Spec -> `swift sft` argv, flag by flag for each seed scenario (tests/integration checks them with ms-swift)."""

from __future__ import annotations

import pytest

from modelforge.launcher.argv import flag_values
from modelforge.plan.resolve import PlanError, resolve
from tests.launcher_specs import argv_for, finetunejobs

JOBS = finetunejobs()


def flags(argv: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for index, item in enumerate(argv):
        if item.startswith("--"):
            out[item] = flag_values(argv, item) if argv.count(item) == 1 else [*out.get(item, []), argv[index + 1]]
    return out


def test_seed1_qwen3_8b_qlora_8gb():
    f = flags(argv_for(JOBS["qwen3-8b-qlora-8gb"]))
    assert f["--tuner_type"] == ["lora"]
    assert (f["--lora_rank"], f["--lora_alpha"], f["--target_modules"]) == (["64"], ["128"], ["all-linear"])
    assert f["--quant_method"] == ["bnb"] and f["--quant_bits"] == ["4"]
    assert f["--bnb_4bit_quant_type"] == ["nf4"] and f["--bnb_4bit_use_double_quant"] == ["true"]
    assert f["--bnb_4bit_compute_dtype"] == ["bfloat16"]
    assert f["--learning_rate"] == ["3e-06"] and f["--max_length"] == ["1024"]
    assert f["--per_device_train_batch_size"] == ["1"] and f["--gradient_accumulation_steps"] == ["16"]
    assert f["--gradient_checkpointing"] == ["true"] and f["--num_train_epochs"] == ["3.0"]
    assert f["--dataset"] == ["pvc://datasets/support/chats.jsonl"]
    assert f["--torch_dtype"] == ["bfloat16"] and f["--bf16"] == ["true"] and f["--fp16"] == ["false"]
    assert "--deepspeed" not in f  # one GPU: auto -> none
    assert f["--check_model"] == ["false"] and f["--add_version"] == ["false"]
    assert f["--output_dir"] == ["/mnt/output/run"]


def test_seed3_a3b_full_zero3_offload_with_subsample():
    spec = JOBS["qwen3-30b-a3b-full-5gpu"]
    f = flags(argv_for(spec))
    assert f["--tuner_type"] == ["full"]
    assert not {"--lora_rank", "--quant_method"} & set(f)
    assert f["--deepspeed"] == ["zero3_offload"]
    assert f["--dataset"] == ["AI-ModelScope/alpaca-gpt4-data-en#1000"]
    assert f["--gradient_accumulation_steps"] == ["4"]  # globalBatchSize 20 / (1 x 5 GPUs)
    assert resolve(spec).world_size == 5


def test_seed2_four_formats_split_and_merge_flags():
    f = flags(argv_for(JOBS["qwen3-8b-base-formats-merge"]))
    assert len(f["--dataset"]) == 4
    assert f["--split_dataset_ratio"] == ["0.05"] and f["--eval_strategy"] == ["steps"]
    assert (f["--lora_rank"], f["--lora_alpha"]) == (["16"], ["32"])
    assert f["--max_steps"] == ["2000"] and "--num_train_epochs" not in f


def test_seed4_eval_set_and_paged_adamw():
    f = flags(argv_for(JOBS["llama2-13b-qlora-24gb"]))
    assert f["--val_dataset"] == ["configMap://instructions/eval.jsonl"]
    assert f["--split_dataset_ratio"] == ["0"] and f["--eval_steps"] == ["100"]
    assert f["--optim"] == ["paged_adamw_8bit"]
    assert (f["--model_type"], f["--template"]) == (["llama"], ["llama"])
    assert (f["--save_steps"], f["--save_total_limit"]) == (["200"], ["3"])


def test_multinode_zero2_and_extra_args_last():
    argv = argv_for(JOBS["multinode-lora-kueue"])
    assert flags(argv)["--deepspeed"] == ["zero2"]
    assert argv[-2:] == ["--dataloader_num_workers", "8"]


def test_cpu_uses_float32_and_no_mixed_precision():
    f = flags(argv_for(JOBS["tiny-cpu"], device="cpu"))
    assert (f["--torch_dtype"], f["--bf16"], f["--fp16"]) == (["float32"], ["false"], ["false"])
    assert f["--eval_strategy"] == ["no"] and f["--split_dataset_ratio"] == ["0"]


def test_resume_flag():
    argv = argv_for(JOBS["tiny-cpu"], resume="/mnt/output/run/checkpoint-10")
    assert flag_values(argv, "--resume_from_checkpoint") == ["/mnt/output/run/checkpoint-10"]
    assert "--resume_from_checkpoint" not in argv_for(JOBS["tiny-cpu"])


def test_argv_is_a_list_of_strings_never_a_shell_line():
    for spec in JOBS.values():
        argv = argv_for(spec)
        assert all(isinstance(a, str) for a in argv)


def test_global_batch_size_must_divide():
    spec = JOBS["qwen3-30b-a3b-full-5gpu"].model_copy(deep=True)
    spec.hyperparameters.global_batch_size = 12
    with pytest.raises(PlanError, match=r"globalBatchSize 12 is not a multiple of .* = 5; use 10"):
        resolve(spec)


@pytest.mark.parametrize(
    ("method", "gpus", "expected"), [("lora", 1, "none"), ("lora", 8, "zero2"), ("full", 8, "zero3")]
)
def test_deepspeed_auto(method, gpus, expected):
    spec = JOBS["tiny-cpu"].model_copy(deep=True)
    spec.method = method
    spec.resources.gpus_per_node = gpus
    assert resolve(spec).deepspeed == expected
