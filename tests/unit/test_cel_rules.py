"""Every x-kubernetes-validations rule in the CRDs, evaluated with a CEL engine on objects it must accept
and objects it must reject. A rule added without a case here fails `test_every_rule_has_cases`."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelforge.api.cel import check_rules
from modelforge.api.crd import RESOURCES, build_crd
from modelforge.api.validate import validate_document


def ftj(**spec: Any) -> dict[str, Any]:
    base = {
        "model": {"source": "Qwen/Qwen3-8B"},
        "datasets": [{"source": "org/data"}],
        "hyperparameters": {"epochs": 1},
    }
    base.update(spec)
    return {
        "apiVersion": "modelforge.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "j"},
        "spec": base,
    }


def serve(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": {"source": "Qwen/Qwen3-8B"}}
    base.update(spec)
    return {
        "apiVersion": "modelforge.io/v1alpha1",
        "kind": "ModelServe",
        "metadata": {"name": "s"},
        "spec": base,
    }


HP = {"epochs": 1}
EVAL = {"datasets": [{"source": "pvc://data/eval.jsonl"}]}


def named(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return {**doc, "metadata": {"name": name}}


# (message fragment, object the rule accepts, object it rejects, field path of the error)
# Flags about the vocabulary's tokens: no credential in them.
VOCABULARY_FLAGS = ["--stop_token_ids", "7", "--pad_token=<|endoftext|>", "--bos_token_id", "1", "--eos_token", "x"]

CASES: list[tuple[str, dict, dict, str]] = [
    # The whole object's rules (their message names the field; the API server reports them at the root)
    ("a ModelServe's name is also its Service's", named(serve(), "chat-v2"), named(serve(), "chat.v2"), ""),
    ("a ModelServe's name is also its Service's", named(serve(), "a" * 63), named(serve(), "a" * 64), ""),
    ("a ModelServe's name is also its Service's", named(serve(), "v2-chat"), named(serve(), "2-chat"), ""),
    (  # not a CRD rule (a running job keeps training), but what `modelforge validate` says
        "the ModelServe of spec.serve takes the job's name",
        named(ftj(serve={"name": "job-v2"}), "job.v2"),
        named(ftj(serve={}), "job.v2"),
        "spec.serve.name",
    ),
    (
        "leaves nothing to train",
        ftj(multimodal={"freezeVit": True, "freezeAligner": False, "freezeLlm": True}),
        ftj(multimodal={"freezeVit": True, "freezeAligner": True, "freezeLlm": True}),
        "spec.multimodal",
    ),
    (
        "mediaRoot must be a pvc://claim/folder URL or a path",
        ftj(multimodal={"mediaRoot": "pvc://media/images"}),
        ftj(multimodal={"mediaRoot": "s3://bucket/images"}),
        "spec.multimodal.mediaRoot",
    ),
    (
        "quantization applies only to method qlora",
        ftj(method="qlora", quantization={"bits": 4}),
        ftj(method="lora", quantization={"bits": 4}),
        "spec.quantization",
    ),
    (
        "lora settings do not apply to method full",
        ftj(method="lora", lora={"rank": 4}),
        ftj(method="full", lora={"rank": 4}),
        "spec.lora",
    ),
    (
        "output.merge merges a LoRA adapter",
        ftj(output={"claimName": "m", "merge": True}),
        ftj(method="full", output={"claimName": "m", "merge": True}),
        "spec.output.merge",
    ),
    (
        "output.merge is not supported with distributed.runtime ray",
        ftj(output={"claimName": "m", "merge": True}, distributed={"runtime": "torchrun"}),
        ftj(output={"claimName": "m", "merge": True}, distributed={"runtime": "ray"}),
        "spec.output.merge",
    ),
    (
        "priorityClass is Kueue's WorkloadPriorityClass and needs queueName",
        ftj(scheduling={"queueName": "team-a", "priorityClass": "high"}),
        ftj(scheduling={"priorityClass": "high"}),
        "spec.scheduling.priorityClass",
    ),
    (
        "evaluation is not supported with distributed.runtime ray",
        ftj(evaluation=EVAL, distributed={"runtime": "torchrun"}),
        ftj(evaluation=EVAL, distributed={"runtime": "ray"}),
        "spec.evaluation",
    ),
    (
        "an evaluation dataset is a file on a claim",
        ftj(evaluation={"datasets": [{"source": "pvc://data/eval.jsonl"}]}),
        ftj(evaluation={"datasets": [{"source": "https://example.com/eval.jsonl"}]}),
        "spec.evaluation.datasets[0].source",
    ),
    (
        "a gate needs minimum, minImprovement or both",
        ftj(evaluation={**EVAL, "gate": {"metric": "rougeL", "minImprovement": 0}}),
        ftj(evaluation={**EVAL, "gate": {"metric": "rougeL"}}),
        "spec.evaluation.gate",
    ),
    (
        "evaluation.gate.metric must be one of evaluation.metrics",
        ftj(evaluation={**EVAL, "metrics": ["bleu"], "gate": {"metric": "bleu", "minimum": 5}}),
        ftj(evaluation={**EVAL, "metrics": ["bleu"], "gate": {"metric": "rougeL", "minimum": 5}}),
        "spec.evaluation.gate.metric",
    ),
    (
        "evaluation.gate.minImprovement compares with the base model",
        ftj(evaluation={**EVAL, "baseline": False, "gate": {"metric": "rougeL", "minimum": 5}}),
        ftj(evaluation={**EVAL, "baseline": False, "gate": {"metric": "rougeL", "minImprovement": 5}}),
        "spec.evaluation.gate.minImprovement",
    ),
    (
        "the judge metric and evaluation.judge go together",
        ftj(evaluation={**EVAL, "metrics": ["judge"], "judge": {"endpoint": "http://judge:8000/v1"}}),
        ftj(evaluation={**EVAL, "metrics": ["judge"]}),
        "spec.evaluation.judge",
    ),
    (
        "judge.endpoint must be an http:// or https:// URL",
        ftj(evaluation={**EVAL, "metrics": ["judge"], "judge": {"endpoint": "https://judge.example/v1"}}),
        ftj(evaluation={**EVAL, "metrics": ["judge"], "judge": {"endpoint": "judge:8000"}}),
        "spec.evaluation.judge.endpoint",
    ),
    (
        "without offload needs more than one GPU",
        ftj(distributed={"deepspeed": "zero3"}, resources={"gpusPerNode": 2}),
        ftj(distributed={"deepspeed": "zero3"}),
        "spec.distributed.deepspeed",
    ),
    (
        "set exactly one of epochs or maxSteps",
        ftj(hyperparameters={"maxSteps": 10}),
        ftj(hyperparameters={"learningRate": 0.001}),
        "spec.hyperparameters",
    ),
    (
        "set gradientAccumulation or globalBatchSize, not both",
        ftj(hyperparameters={**HP, "globalBatchSize": 64}),
        ftj(hyperparameters={**HP, "globalBatchSize": 64, "gradientAccumulation": 4}),
        "spec.hyperparameters.globalBatchSize",
    ),
    (
        "set warmupRatio or warmupSteps, not both",
        ftj(hyperparameters={**HP, "warmupSteps": 10}),
        ftj(hyperparameters={**HP, "warmupSteps": 10, "warmupRatio": 0.1}),
        "spec.hyperparameters.warmupSteps",
    ),
    (
        "write the subsample count in `samples`",
        ftj(datasets=[{"source": "org/data", "samples": 100}]),
        ftj(datasets=[{"source": "org/data#100"}]),
        "spec.datasets[0].source",
    ),
    (
        "source must be a hub id, a path, or a pvc://",
        ftj(datasets=[{"source": "configMap://cm/train.jsonl"}]),
        ftj(datasets=[{"source": "gs://b/x.jsonl"}]),
        "spec.datasets[0].source",
    ),
    (
        "set exactly one of validation.datasets or validation.splitRatio",
        ftj(validation={"splitRatio": 0.1}),
        ftj(validation={"evalSteps": 10}),
        "spec.validation",
    ),
    (
        "set exactly one of model.source or model.fromFineTuneJob",
        serve(model={"fromFineTuneJob": "j"}),
        serve(model={"hub": "modelscope"}),
        "spec.model",
    ),
    (
        "set exactly one of source or fromFineTuneJob for each adapter",
        serve(adapters=[{"name": "a", "fromFineTuneJob": "j"}]),
        serve(adapters=[{"name": "a", "source": "pvc://m/a", "fromFineTuneJob": "j"}]),
        "spec.adapters[0]",
    ),
    (
        "tensorParallel and pipelineParallel above 1 need engine vllm",
        serve(tensorParallel=4),
        serve(engine="swift", pipelineParallel=2),
        "spec.engine",
    ),
    (
        "gpusPerReplica 0 (CPU serving) needs engine swift",
        serve(engine="swift", resources={"gpusPerReplica": 0}),
        serve(resources={"gpusPerReplica": 0}),
        "spec.resources.gpusPerReplica",
    ),
    (
        "adapter names must be unique",
        serve(adapters=[{"name": "a", "source": "x/a"}, {"name": "b", "source": "x/b"}]),
        serve(adapters=[{"name": "a", "source": "x/a"}, {"name": "a", "source": "x/b"}]),
        "spec.adapters",
    ),
    # the serve template nested in a FineTuneJob carries the ModelServe rules too
    (
        "tensorParallel and pipelineParallel above 1 need engine vllm",
        ftj(serve={"spec": {"tensorParallel": 2}}),
        ftj(serve={"spec": {"engine": "swift", "tensorParallel": 2}}),
        "spec.serve.spec.engine",
    ),
    # extraArgs: a flag carrying a credential is refused (argv is visible in the pod spec and the engine's logs)
    (
        "put the credential in a Secret referenced by spec.secrets.hubToken",
        ftj(extraArgs=[*VOCABULARY_FLAGS, "--lora_target_modules", "all-linear", "--max_new_tokens", "64"]),
        ftj(extraArgs=["--lora_rank", "8", "--hub_token=hf_abc"]),
        "spec.extraArgs[2]",
    ),
    (  # the vocabulary's flags exempt exactly those, not a credential word around them
        "put the credential in a Secret referenced by spec.secrets.hubToken",
        ftj(extraArgs=["--stop_token_ids", "7"]),
        ftj(extraArgs=["--hub_token_id=hf_abc"]),
        "spec.extraArgs[0]",
    ),
    (
        "put the credential in a Secret referenced by spec.secrets.hubToken",
        ftj(extraArgs=["--pad_token", "x"]),
        ftj(extraArgs=["--eos_token_password=hunter22"]),
        "spec.extraArgs[0]",
    ),
    (
        "put the credential in a Secret referenced by spec.apiKeySecretRef",
        serve(extraArgs=["--max-num-batched-tokens", "4096", "--ssl-keyfile", "/tls/key.pem"]),
        serve(extraArgs=["--api-key", "sk-abc"]),
        "spec.extraArgs[0]",
    ),
]


@pytest.mark.parametrize(("fragment", "good", "bad", "path"), CASES, ids=[c[0][:40] for c in CASES])
def test_rule_accepts_and_rejects(fragment, good, bad, path):
    assert validate_document(good) == []
    problems = validate_document(bad)
    assert [(p.path, fragment in p.message) for p in problems] == [(path, True)], problems


def _all_rules() -> list[str]:
    found: list[str] = []

    def walk(node: dict) -> None:
        found.extend(r["message"] for r in node.get("x-kubernetes-validations", ()) if "oldSelf" not in r["rule"])
        for child in node.get("properties", {}).values():
            walk(child)
        if isinstance(node.get("items"), dict):
            walk(node["items"])

    for resource in RESOURCES:
        walk(build_crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return found


def test_every_rule_has_cases():
    covered = {c[0] for c in CASES}  # the CRDs' rules; CASES also holds modelforge validate's object checks
    missing = [m for m in _all_rules() if not any(fragment in m for fragment in covered)]
    assert missing == []


IMMUTABLE = [
    "model",
    "method",
    "lora",
    "quantization",
    "datasets",
    "validation",
    "multimodal",
    "evaluation",
    "hyperparameters",
    "output",
]


@pytest.mark.parametrize(
    ("field", "new_value"),
    [
        ("model", {"source": "Qwen/Qwen3-14B"}),
        ("method", "qlora"),
        ("lora", {"rank": 16}),
        ("datasets", [{"source": "org/other"}]),
        ("validation", {"splitRatio": 0.2}),
        ("multimodal", {"freezeVit": False}),
        ("evaluation", {"datasets": [{"source": "pvc://data/other.jsonl"}]}),
        ("hyperparameters", {"epochs": 2}),
        ("output", {"claimName": "elsewhere"}),
    ],
)
def test_training_fields_are_immutable_after_creation(field, new_value):
    old = ftj(lora={"rank": 8}, validation={"splitRatio": 0.1}, output={"claimName": "models"}, evaluation=EVAL)
    new = copy.deepcopy(old)
    new["spec"][field] = new_value
    problems = validate_document(new, old=old)
    assert [p.path for p in problems] == [f"spec.{field}"]
    assert "cannot change after the job is created" in problems[0].message
    assert validate_document(new) == []  # the same object is fine when it is created


def test_adding_an_immutable_block_later_is_rejected():
    old = ftj()
    new = ftj(quantization={"bits": 4}, method="qlora")
    paths = sorted(p.path for p in validate_document(new, old=old))
    assert paths == ["spec.method", "spec.quantization"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("suspend", True),
        ("failurePolicy", {"maxRestarts": 9}),
        ("activeDeadlineSeconds", 60),
        ("serve", {"spec": {"replicas": 2}}),
        ("resources", {"gpusPerNode": 2}),
    ],
)
def test_operational_fields_stay_mutable(field, value):
    old = ftj()
    new = copy.deepcopy(old)
    new["spec"][field] = value
    assert validate_document(new, old=old) == []


def test_every_immutable_field_has_a_transition_rule():
    spec = build_crd(RESOURCES[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    guarded = {r["fieldPath"].lstrip(".") for r in spec["x-kubernetes-validations"] if "oldSelf" in r["rule"]}
    assert guarded == set(IMMUTABLE)


def test_a_rule_that_cannot_be_evaluated_is_reported_not_swallowed():
    schema = {
        "type": "object",
        "x-kubernetes-validations": [{"rule": "self.missing > 1", "message": "needs it"}],
    }
    problems = check_rules(schema, {}, "spec")
    assert len(problems) == 1 and problems[0].message.startswith("needs it (rule could not be evaluated")
