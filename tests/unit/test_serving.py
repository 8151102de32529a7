"""ModelServe: engines, rendering, pre-create checks and status, without a cluster."""

from __future__ import annotations

import json
from datetime import datetime

import kubernetes_validate
import pytest

from modelforge.api.finetunejob import ServeTemplate
from modelforge.api.modelserve import ModelServeSpec, ServePhase
from modelforge.plan.models import architecture, lookup
from modelforge.plan.phases import serve_phase
from modelforge.plan.serving import (
    ServeObserved,
    decide_serve,
    predicted_outputs,
    resolve_from_job,
    serve_problems,
    serve_status,
)
from modelforge.render.security import HOME_DIR
from modelforge.render.serving import (
    ADAPTERS_DIGEST,
    CHAT_TEMPLATE,
    CHAT_TEMPLATE_MOUNT,
    ResolvedModel,
    adapters_digest,
    pods_to_nudge,
    render_serve,
    startup_budget_seconds,
)
from modelforge.render.settings import RenderSettings
from modelforge.render.training import Owner
from tests.launcher_specs import finetunejobs

OWNER = Owner("ModelServe", "assistants", "team-a", "uid-serve")
K8S = "1.33"
NOW = datetime(2026, 12, 2, 12, 0, 0)


def spec(**fields) -> ModelServeSpec:
    return ModelServeSpec.model_validate({"model": {"source": "Qwen/Qwen3-8B"}, **fields})


def render(s: ModelServeSpec, model: ResolvedModel | None = None):
    return render_serve(OWNER, s, model or ResolvedModel("Qwen/Qwen3-8B", params_b=8.19), RenderSettings())


def container(objects) -> dict:
    return objects.deployment["spec"]["template"]["spec"]["containers"][0]


def test_one_gpu_vllm():
    objects = render(spec())
    for obj in (objects.deployment, objects.service):
        assert kubernetes_validate.validate(obj, K8S, strict=True) == K8S
    c = container(objects)
    assert c["command"] == ["vllm", "serve"]
    assert c["args"][:1] == ["Qwen/Qwen3-8B"] and "--served-model-name" in c["args"]
    assert c["args"][c["args"].index("--served-model-name") + 1] == "assistants"
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["failureThreshold"] * 10 >= startup_budget_seconds(8.19)
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert objects.service["spec"]["ports"][0]["port"] == 8000
    assert objects.deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two GPU copies at once


def test_tp4_for_qwen3_30b_a3b():
    s = spec(model={"source": "Qwen/Qwen3-30B-A3B-Thinking-2507"}, tensorParallel=4)
    assert serve_problems(s, lookup("Qwen/Qwen3-30B-A3B-Thinking-2507"), "Qwen3-30B-A3B") == ([], [])
    c = container(render(s, ResolvedModel("Qwen/Qwen3-30B-A3B-Thinking-2507", params_b=30.5)))
    assert c["args"][c["args"].index("--tensor-parallel-size") + 1] == "4"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert startup_budget_seconds(30.5) > startup_budget_seconds(8.19)


def test_tp5_is_rejected_with_the_reason():
    s = spec(model={"source": "Qwen/Qwen3-30B-A3B"}, tensorParallel=5)
    problems, _ = serve_problems(s, lookup("Qwen/Qwen3-30B-A3B"), "Qwen/Qwen3-30B-A3B")
    assert problems == [
        "spec.tensorParallel: 5 does not divide the 32 attention heads of Qwen/Qwen3-30B-A3B; use one of "
        "1, 2, 4, 8, 16 (e.g. 5 GPUs: tensorParallel 4 per replica, or 5 replicas with tensorParallel 1)"
    ]


def test_unknown_model_is_not_checked_but_said():
    problems, notes = serve_problems(spec(tensorParallel=3), None, "acme/secret-model")
    assert problems == [] and notes == ["attention heads of acme/secret-model unknown: tensorParallel 3 not checked"]


def test_replica_must_fit_a_node():
    problems, _ = serve_problems(spec(tensorParallel=8, resources={"gpusPerNode": 4}), lookup("Qwen/Qwen3-8B"), "x")
    assert problems and "8 GPUs per replica, but resources.gpusPerNode is 4" in problems[0]


def test_two_adapters_and_an_api_key():
    s = spec(adapters=[{"name": "support", "source": "pvc://models/support/run/last-checkpoint"},
                       {"name": "sql", "source": "pvc://models/sql/run/last-checkpoint"}],
             apiKeySecretRef={"name": "serve-key", "key": "key"})  # fmt: skip
    model = ResolvedModel("Qwen/Qwen3-8B", (("support", "pvc://models/support/run/last-checkpoint"),
                                            ("sql", "pvc://models/sql/run/last-checkpoint")))  # fmt: skip
    objects = render(s, model)
    assert kubernetes_validate.validate(objects.deployment, K8S, strict=True) == K8S
    c = container(objects)
    args = c["args"]
    # Live adapters: LoRA on, the adapters not in the argv (changing them never rolls the pods) but in the
    # ConfigMap the serve agent sidecar loads them from (runtime LoRA API).
    assert "--enable-lora" in args and "--lora-modules" not in args
    assert args[args.index("--max-loras") + 1] == "4"
    assert json.loads(objects.adapters["data"]["adapters.json"]) == [
        {"name": "support", "path": "/mnt/pvc/models/support/run/last-checkpoint"},
        {"name": "sql", "path": "/mnt/pvc/models/sql/run/last-checkpoint"}]  # fmt: skip
    env = {e["name"]: e for e in c["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "serve-key", "key": "key"}}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"]["value"] == "True"
    assert "--api-key" not in args and "serve-key" not in json.dumps(args)
    pod = objects.deployment["spec"]["template"]["spec"]
    assert {"name": "pvc-models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]
    assert {"name": "adapters", "configMap": {"name": "assistants-adapters"}} in pod["volumes"]
    agent = next(x for x in pod["containers"] if x["name"] == "agent")
    assert agent["command"] == ["modelforge"] and agent["args"][0] == "serve-agent"
    assert "--adapters" in agent["args"] and agent["args"][agent["args"].index("--api-key-env") + 1] == "VLLM_API_KEY"
    secrets = {e["name"]: e["valueFrom"] for e in agent["env"] if "valueFrom" in e}
    assert secrets == {"VLLM_API_KEY": env["VLLM_API_KEY"]["valueFrom"]}
    # Another adapter list: the same Deployment (same hash, no rollout), another ConfigMap.
    one = render(s, ResolvedModel("Qwen/Qwen3-8B", (("support", "pvc://models/support/run/last-checkpoint"),)))
    assert one.spec_hash == objects.spec_hash and one.adapters != objects.adapters
    # The pods behind the ConfigMap's new list are annotated (their kubelet then refreshes it at once); a pod
    # already told, or terminating, is not.
    new = adapters_digest(one.adapters)
    assert new != adapters_digest(objects.adapters)
    pods = [{"metadata": {"name": "a", "annotations": {ADAPTERS_DIGEST: adapters_digest(objects.adapters)}}},
            {"metadata": {"name": "b"}},
            {"metadata": {"name": "c", "annotations": {ADAPTERS_DIGEST: new}}},
            {"metadata": {"name": "d", "deletionTimestamp": "2026-12-07T00:00:00Z"}}]  # fmt: skip
    assert pods_to_nudge(one.adapters, pods) == {"a": new, "b": new}
    assert pods_to_nudge(None, pods) == {}


def test_swift_engine_on_cpu():
    s = spec(engine="swift", resources={"gpusPerReplica": 0}, systemPrompt="Be brief.",
             apiKeySecretRef={"name": "k", "key": "key"})  # fmt: skip
    objects = render(s)
    c = container(objects)
    assert c["command"] == ["python", "-m", "modelforge.launcher.swift_serve"]
    assert c["args"][c["args"].index("--system") + 1] == "Be brief."
    assert "--api_key" not in c["args"] and "MODELFORGE_API_KEY" not in " ".join(c["args"])  # never in argv
    assert {e["name"]: e.get("valueFrom") for e in c["env"]}["MODELFORGE_API_KEY"] == {
        "secretKeyRef": {"name": "k", "key": "key"}}  # fmt: skip
    assert c["resources"]["limits"] == {}
    assert objects.deployment["spec"]["strategy"] == {"type": "RollingUpdate"}


def test_engine_specific_fields_are_rejected():
    problems, _ = serve_problems(spec(engine="swift", quantization="awq"), None, "m")
    assert problems == ["spec.quantization: not supported by engine swift (use engine vllm)"]


def test_spec_changes_change_the_hash():
    assert render(spec()).spec_hash == render(spec()).spec_hash
    assert render(spec()).spec_hash != render(spec(maxModelLen=4096)).spec_hash
    assert render(spec()).spec_hash != render(spec(replicas=3)).spec_hash  # scaling patches the Deployment


def job(phase: str, outputs: dict | None = None, method: str = "lora") -> dict:
    return {"spec": {"model": {"source": "Qwen/Qwen3-8B"}, "method": method, "datasets": [{"source": "a/b"}],
                     "hyperparameters": {"epochs": 1}},
            "status": {"phase": phase, "outputs": outputs or {}}}  # fmt: skip


def test_resolve_from_job():
    assert resolve_from_job("j", None)[0] is None
    model, why = resolve_from_job("j", job("Running"))
    assert model is None and why == "waiting for FineTuneJob j to succeed (phase Running)"
    model, _ = resolve_from_job("j", job("Succeeded", {"mergedModel": "pvc://m/j/merged", "adapter": "pvc://m/a"}))
    assert model == ResolvedModel("pvc://m/j/merged")
    model, _ = resolve_from_job("j", job("Succeeded", {"adapter": "pvc://m/j/run/checkpoint-9"}))
    assert model == ResolvedModel("Qwen/Qwen3-8B", (("j", "pvc://m/j/run/checkpoint-9"),))
    assert "failed" in resolve_from_job("j", job("Failed"))[1]


def test_predicted_outputs():
    spec_ = finetunejobs()["qwen3-8b-base-formats-merge"]
    assert predicted_outputs("base-formats", spec_) == {
        "outputDir": "pvc://models/experiments/base-formats/run",
        "adapter": "pvc://models/experiments/base-formats/run/last-checkpoint",
        "mergedModel": "pvc://models/experiments/base-formats/merged",
    }


def ready_pod() -> dict:
    return {
        "metadata": {"name": "p"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.mark.parametrize(
    ("observed", "phase", "reason"),
    [
        (ServeObserved({"status": {}}, ()), ServePhase.LOADING, "Loading"),
        (ServeObserved({"status": {}}, ({"metadata": {"name": "p"}, "status": {"containerStatuses": [
            {"lastState": {"terminated": {"reason": "OOMKilled"}}, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
        ]}},), last_log_line="torch.OutOfMemoryError"), ServePhase.FAILED, "OOMKilled"),
        (ServeObserved({"status": {}}, ({"metadata": {"name": "p"}, "status": {"containerStatuses": [
            {"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}},), last_log_line="ValueError: bad flag"),
         ServePhase.FAILED, "CrashLoopBackOff"),
        (ServeObserved({"status": {"readyReplicas": 1}}, (ready_pod(),), ("assistants", "support")),
         ServePhase.READY, "Serving"),
        (ServeObserved({"status": {"readyReplicas": 1}}, (ready_pod(),), ("assistants",)),
         ServePhase.DEGRADED, "Serving"),
    ],
)  # fmt: skip
def test_serve_status(observed, phase, reason):
    got, conditions, _ = serve_status(spec(), "assistants", ("support",), observed, "http://x/v1")
    assert got == phase
    # The phase it promises is the one derived from the conditions (plan/phases.py), the only phase there is.
    wire = [{"type": k, "status": str(ok), "reason": r, "message": m} for k, ok, r, m in conditions]
    assert serve_phase(wire) == phase
    ready = next(c for c in conditions if c[0] == "Ready")
    assert ready[2] == reason
    if phase == ServePhase.DEGRADED:
        degraded = next(c for c in conditions if c[0] == "Degraded")
        assert degraded[1] is True and degraded[2] == "AdapterMissing" and "support" in degraded[3]
    if reason == "CrashLoopBackOff":
        assert "ValueError: bad flag" in ready[3]


def test_architecture_from_a_local_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2,
                                                      "num_attention_heads": 4, "num_key_value_heads": 2,
                                                      "vocab_size": 2048, "tie_word_embeddings": True}))  # fmt: skip
    arch = architecture(str(tmp_path))
    assert arch is not None and (arch.heads, arch.kv_heads, arch.layers) == (4, 2, 2)
    assert lookup("meta-llama/Llama-2-13b-chat-hf").heads == 40
    assert lookup("acme/unknown") is None


def test_hub_and_revision_reach_both_engines():
    """model.hub and model.revision are honoured, not dropped (for a hub id; paths and claims have neither)."""
    vllm = render(spec(model={"source": "Qwen/Qwen3-8B", "hub": "modelscope", "revision": "v1.0"}))
    args, env = container(vllm)["args"], {e["name"]: e.get("value") for e in container(vllm)["env"]}
    assert args[args.index("--revision") + 1] == "v1.0" and env["VLLM_USE_MODELSCOPE"] == "True"
    swift = render(spec(engine="swift", resources={"gpusPerReplica": 0}, model={"source": "Qwen/Qwen3-8B",
                                                                                 "revision": "main"}))  # fmt: skip
    args = container(swift)["args"]
    assert args[args.index("--use_hf") + 1] == "true" and args[args.index("--model_revision") + 1] == "main"
    on_claim = render(spec(model={"source": "pvc://models/tiny", "revision": "v1"}),
                      ResolvedModel("pvc://models/tiny"))  # fmt: skip
    assert "--revision" not in container(on_claim)["args"]


def test_a_system_prompt_with_vllm_wraps_the_models_chat_template():
    """vLLM has no default system prompt: an init step wraps the model's template (launcher/chat_template.py),
    the engine reads it from a shared volume and gets the prompt as a template variable."""
    s = spec(model={"source": "pvc://models/tiny"}, systemPrompt='Be brief, "always".')
    objects = render(s, ResolvedModel("pvc://models/tiny"))
    assert kubernetes_validate.validate(objects.deployment, K8S, strict=True) == K8S
    pod = objects.deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == ["modelforge"] and init["args"] == [
        "chat-template", "--model", "/mnt/pvc/models/tiny", "--out", CHAT_TEMPLATE]  # fmt: skip
    assert {m["mountPath"] for m in init["volumeMounts"]} == {"/mnt/pvc/models", CHAT_TEMPLATE_MOUNT, "/tmp", HOME_DIR}
    args = container(objects)["args"]
    assert args[args.index("--chat-template") + 1] == CHAT_TEMPLATE
    assert json.loads(args[args.index("--default-chat-template-kwargs") + 1]) == {
        "modelforge_system": 'Be brief, "always".'}  # fmt: skip
    assert {"name": "chat-template", "mountPath": CHAT_TEMPLATE_MOUNT, "readOnly": True} in container(objects)[
        "volumeMounts"]  # fmt: skip
    # Without a system prompt nothing of it is rendered.
    plain = render(spec(model={"source": "pvc://models/tiny"}), ResolvedModel("pvc://models/tiny"))
    assert "initContainers" not in plain.deployment["spec"]["template"]["spec"]
    assert "--chat-template" not in container(plain)["args"]


def test_a_system_prompt_vllm_cannot_apply_to_a_hub_model_is_said_not_dropped():
    s = spec(systemPrompt="Be brief.", resources={"gpusPerReplica": 0})
    assert "--chat-template" not in container(render(s))["args"]
    ready = {"metadata": {"name": "p"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    d = decide_serve("s", "ns", s, [], {}, ServeObserved({"status": {"readyReplicas": 1}}, (ready,), ("s",)), NOW)
    assert "spec.systemPrompt is not applied by engine vllm to a hub model" in json.dumps(d.wire["conditions"])


def test_a_system_prompt_with_a_hub_base_from_a_job_is_not_wrapped():
    """fromFineTuneJob of an unmerged LoRA on a hub base: the base is a hub id, not files the init step has."""
    s = spec(systemPrompt="Be brief.")
    objects = render(s, ResolvedModel("Qwen/Qwen3-8B", (("sft", "pvc://models/sft/run/checkpoint-9"),)))
    assert "initContainers" not in objects.deployment["spec"]["template"]["spec"]
    assert "--chat-template" not in container(objects)["args"]


def test_empty_sampling_adds_no_flag():
    assert "--override-generation-config" not in container(render(spec(sampling={})))["args"]


def test_default_sampling_reaches_both_engines():
    sampling = {"temperature": 0.2, "topP": 0.9, "maxTokens": 128}
    args = container(render(spec(sampling=sampling)))["args"]
    assert json.loads(args[args.index("--override-generation-config") + 1]) == {
        "temperature": 0.2, "top_p": 0.9, "max_new_tokens": 128}  # fmt: skip
    swift = container(render(spec(engine="swift", resources={"gpusPerReplica": 0}, sampling=sampling)))["args"]
    assert [swift[swift.index(f) + 1] for f in ("--temperature", "--top_p", "--max_new_tokens")] == [
        "0.2",
        "0.9",
        "128",
    ]


def test_the_wrapped_chat_template_adds_the_default_system_prompt_only_when_none_is_sent(tmp_path):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from modelforge.launcher.chat_template import NoChatTemplate, main, model_chat_template, with_default_system
    from modelforge.testing import CHAT_TEMPLATE as TINY_TEMPLATE

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": TINY_TEMPLATE}))
    assert main(str(tmp_path), str(tmp_path / "out" / "t.jinja")) == 0
    wrapped = (tmp_path / "out" / "t.jinja").read_text()
    assert wrapped == with_default_system(TINY_TEMPLATE) == with_default_system(wrapped)  # wrapping is idempotent
    template = ImmutableSandboxedEnvironment().from_string(wrapped)
    user = [{"role": "user", "content": "hi"}]
    default = template.render(messages=user, add_generation_prompt=True, modelforge_system="Be brief.")
    assert default.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi")
    own = [{"role": "system", "content": "Mine."}, *user]
    assert template.render(messages=own, modelforge_system="Be brief.").count("system") == 1
    assert "Be brief." not in template.render(messages=own, modelforge_system="Be brief.")
    assert template.render(messages=user) == ImmutableSandboxedEnvironment().from_string(TINY_TEMPLATE).render(
        messages=user)  # fmt: skip
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")  # the newer file wins over tokenizer_config
    assert model_chat_template(tmp_path) == "{{ messages }}"
    with pytest.raises(NoChatTemplate, match="has no chat template"):
        model_chat_template(tmp_path / "missing")
    assert main(str(tmp_path / "missing"), str(tmp_path / "x.jinja")) == 1


@pytest.mark.parametrize("engine", ["vllm", "swift"])
def test_api_key_is_in_no_container_argv(engine):
    """Issue 15, secrets: with an API key Secret, no container of the serving pod (init containers and the
    serve agent included) carries the key, its variable or an --api-key flag in command or args."""
    s = spec(engine=engine, resources={"gpusPerReplica": 0 if engine == "swift" else 1},
             apiKeySecretRef={"name": "serve-key", "key": "key"}, extraArgs=["--max_new_tokens", "64"])  # fmt: skip
    pod = render(s).deployment["spec"]["template"]["spec"]
    everything = pod.get("initContainers", []) + pod["containers"]
    assert len(everything) >= 2  # the engine and the serve agent at least
    for c in everything:
        argv = [*c.get("command", []), *c.get("args", [])]
        flags = [a for a in argv if a.replace("-", "_").lstrip("_").startswith("api_key")]
        assert flags in ([], ["--api-key-env"]), (c["name"], argv)  # the agent is told the variable's name only
        if flags:
            assert argv[argv.index("--api-key-env") + 1] in ("VLLM_API_KEY", "MODELFORGE_API_KEY")
        assert not [a for a in argv if "$(" in a or "serve-key" in a], (c["name"], argv)


@pytest.mark.parametrize(
    ("observed", "status", "reason"),
    [(ServeObserved({"status": {}}, ()), "True", "Resolved"),  # loading: nothing verified the model yet
     (ServeObserved({"status": {}}, ({"metadata": {"name": "p"}, "status": {"containerStatuses": [
         {"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}},)), "True", "Resolved"),  # failed
     (ServeObserved({"status": {"readyReplicas": 1}}, (ready_pod(),), ("s",)), "True", "Serving")],
)  # fmt: skip
def test_model_available_says_serving_only_once_the_engine_lists_it(observed, status, reason):
    d = decide_serve("s", "ns", spec(), [], {}, observed, NOW)
    available = next(c for c in d.wire["conditions"] if c["type"] == "ModelAvailable")
    assert (available["status"], available["reason"]) == (status, reason), available


def test_a_job_whose_serve_would_take_an_invalid_name_is_refused_before_any_pod_but_never_mid_run():
    from modelforge.plan.capacity import PlanSettings
    from modelforge.plan.lifecycle import Observed
    from modelforge.render.desired import desired_finetunejob

    job = finetunejobs()["qwen3-8b-base-formats-merge"].model_copy(update={"serve": ServeTemplate()})
    owner = Owner("FineTuneJob", "support.v2", "ns", "uid")
    new = desired_finetunejob(owner, job, [], {}, Observed(), NOW, 1, PlanSettings(), RenderSettings())
    failed = {c["type"]: c for c in new.status.to_wire()["conditions"]}["Validated"]
    assert failed["reason"] == "InvalidSpec" and "spec.serve.name: the ModelServe of spec.serve" in failed["message"]
    assert new.children == []
    running = {"phase": "Running", "attempt": 1, "startTime": "2026-12-07T08:00:00Z"}
    kept = desired_finetunejob(owner, job, [], running, Observed(), NOW, 1, PlanSettings(), RenderSettings())
    assert "InvalidSpec" not in json.dumps(kept.status.to_wire())
