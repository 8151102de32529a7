"""The REAL vLLM server on the CPU serving what a ModelServe renders, with its serve agent sidecar
(tests/integration/vllm_stack.py says exactly what differs from the pod): the tiny model (hidden 128) and
two LoRA adapters trained here by the real `swift sft` (its checkpoints at steps 20 and 40), behind an API
key. Adapters are live: the agent loads them through vLLM's runtime LoRA API from the adapters ConfigMap,
loads and unloads on a change without restarting the engine, and loads them again into a restarted one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from modelforge.plan.serving import ServeObserved, decide_serve

from .vllm_stack import API_KEY, SYSTEM_PROMPT, Stack, require_vllm, serve_spec

pytestmark = pytest.mark.vllm
MODELFORGE = [sys.executable, "-m", "modelforge.cli"]
NOW = datetime(2026, 12, 1, 12, 0, 0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    require_vllm()  # before training: a missing vLLM is said at once
    root = tmp_path_factory.mktemp("vllm")
    model, early, late = request.getfixturevalue("tiny_adapters")
    assert (early / "adapter_config.json").exists() and (late / "adapter_config.json").exists()
    s = Stack(serve_spec(model, {"early": early, "late": late}), root)
    try:
        s.start_engine()
        s.start_agent()
        s.wait_report(lambda r: [a["state"] for a in r["adapters"]] == ["Loaded", "Loaded"])
        yield s
    finally:
        s.stop()


def observed(report: dict, reported: tuple[str, ...] | None = None) -> ServeObserved:
    pod = {"metadata": {"name": "tiny-0"}, "status": {"phase": "Running",
           "conditions": [{"type": "Ready", "status": "True"}]}}  # fmt: skip
    return ServeObserved({"status": {"readyReplicas": 1}}, (pod,), reported, agent_reports=(report,))


def test_models_are_listed_and_the_key_is_required(stack: Stack) -> None:
    for key in (None, "wrong"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            stack.request("/v1/models", key=key)
        assert refused.value.code == 401
    listed = stack.request("/v1/models")["data"]
    assert {m["id"] for m in listed} == {"tiny", "early", "late"}
    assert {m["id"]: m.get("parent") for m in listed}["early"] == "tiny"
    assert "--lora-modules" not in stack.engine_container["args"]  # loaded live by the agent, not at start


def test_the_operators_status_logic_on_the_agents_real_report(stack: Stack) -> None:
    """decide_serve, the function the operator runs, fed the agent's report (it holds the key, the
    operator does not): Ready with every model verified, each adapter Loaded."""
    report = stack.report()
    assert report is not None and report["engineReady"] and API_KEY not in json.dumps(report)
    ready = decide_serve("tiny", "default", stack.spec, [], {}, observed(report), NOW, 1)
    assert ready.wire["phase"] == "Ready", ready.wire
    assert sorted(ready.wire["models"]) == ["early", "late", "tiny"]
    assert ready.wire["adapters"] == [{"name": "early", "state": "Loaded"}, {"name": "late", "state": "Loaded"}]
    assert "not verified" not in json.dumps(ready.wire["conditions"])


def test_modelforge_chat_and_infer_against_the_real_server(stack: Stack, tmp_path: Path) -> None:
    env = {**os.environ, "SERVE_KEY": API_KEY}
    url = f"{stack.url}/v1"
    answers = {}
    for model in ("tiny", "early", "late"):
        done = subprocess.run([*MODELFORGE, "chat", "--endpoint", url, "--api-key-env", "SERVE_KEY",
                               "--model", model, "--max-new-tokens", "12", "How do I reset my password?"],
                              capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"[{model}: " in done.stderr and "tokens/s" in done.stderr, done.stderr
        answers[model] = done.stdout
    # Greedy decoding: the same question gets another answer through a trained adapter than from the base.
    assert answers["late"] != answers["tiny"], answers
    questions = tmp_path / "questions.txt"
    questions.write_text("Where is my order?\nCan I change my plan?\nHow do I cancel?\n")
    results = tmp_path / "results.jsonl"
    done = subprocess.run([*MODELFORGE, "infer", "--endpoint", url, "--api-key-env", "SERVE_KEY",
                           "--model", "late", "--questions", str(questions), "--output", str(results),
                           "--max-new-tokens", "8"], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 3 and all(r["latency_s"] > 0 and r["completion_tokens"] > 0 for r in rows), rows
    assert all(r["model"] == "late" and r["tokens_per_second"] for r in rows), rows
    assert "latency mean" in done.stdout, done.stdout
    without_key = subprocess.run([*MODELFORGE, "chat", "--endpoint", url, "--model", "tiny", "hi"],
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
    assert without_key.returncode == 1 and "401" in without_key.stderr, without_key.stderr


def test_the_official_openai_client(stack: Stack) -> None:
    """What users call: the `openai` package (installed in the vLLM venv), chat and streaming, every model."""
    script = """
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2])
out = {}
for model in ("tiny", "early", "late"):
    chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=8)
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}],
                                            max_tokens=8, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    out[model] = {"chunks": len(pieces), "model": chat.model, "tokens": chat.usage.completion_tokens}
print(json.dumps(out))
"""
    done = subprocess.run([str(stack.python), "-c", script, f"{stack.url}/v1", API_KEY], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.splitlines()[-1])
    assert set(answers) == {"tiny", "early", "late"}
    for model, answer in answers.items():
        assert answer["model"] == model and answer["tokens"] > 0, answer
        assert answer["chunks"] > 1, answer  # streamed in pieces, not one blob


def test_adapters_are_loaded_and_unloaded_live(stack: Stack, tmp_path: Path) -> None:
    """spec.adapters changes: `early` removed, `ghost` (a path that does not exist) added. The agent
    unloads one and reports the other Failed with the engine's reason; the engine is never restarted."""
    engine_pid = stack.engine.pid if stack.engine else None
    original = stack.spec
    late = next(a for a in original.adapters or [] if a.name == "late")
    changed = serve_spec(Path(str(original.model.source)), {"late": Path(str(late.source)),
                                                            "ghost": tmp_path / "no-such-adapter"})  # fmt: skip
    stack.desired(changed)
    wanted = {"late": "Loaded", "ghost": "Failed"}
    report = stack.wait_report(lambda r: {a["name"]: a["state"] for a in r["adapters"]} == wanted)
    assert {m["id"] for m in stack.request("/v1/models")["data"]} == {"tiny", "late"}
    ghost = next(a for a in report["adapters"] if a["name"] == "ghost")
    assert "cannot find" in ghost["message"], ghost
    degraded = decide_serve("tiny", "default", changed, [], {}, observed(report), NOW, 2)
    assert degraded.wire["phase"] == "Degraded", degraded.wire
    why = next(c for c in degraded.wire["conditions"] if c["type"] == "Degraded")
    assert why["reason"] == "AdapterMissing" and "ghost (Failed: the engine cannot find" in why["message"], why
    assert {a["name"]: a["state"] for a in degraded.wire["adapters"]} == {"late": "Loaded", "ghost": "Failed"}
    # Back as it was: `early` is loaded again, `ghost` forgotten; still the same engine process.
    stack.desired(original)
    stack.wait_report(lambda r: [(a["name"], a["state"]) for a in r["adapters"]] == [("early", "Loaded"),
                                                                                     ("late", "Loaded")])  # fmt: skip
    assert stack.engine is not None and stack.engine.pid == engine_pid and stack.engine.poll() is None


def test_a_restarted_engine_gets_its_adapters_back(stack: Stack) -> None:
    """What a container restart does to runtime adapters (they are gone), and the agent's answer."""
    stack.stop_engine()
    stack.wait_report(lambda r: not r["engineReady"], 30)
    stack.start_engine()
    report = stack.wait_report(lambda r: r["engineReady"] and [a["state"] for a in r["adapters"]] == ["Loaded"] * 2)
    assert set(report["models"]) == {"tiny", "early", "late"}
    assert {m["id"] for m in stack.request("/v1/models")["data"]} == {"tiny", "early", "late"}


def test_default_sampling_from_the_spec(stack: Stack) -> None:
    """spec.sampling {temperature: 0, maxTokens: 32}: a request that sets neither is greedy and stops at 32
    tokens (without it vLLM samples at the model's temperature, up to maxModelLen)."""
    body = {"model": "late", "messages": [{"role": "user", "content": "Tell me about your plans."}]}
    first, second = stack.request("/v1/chat/completions", body), stack.request("/v1/chat/completions", body)
    assert first["usage"]["completion_tokens"] <= 32, first["usage"]
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    assert '"temperature":0' in stack.engine_container["args"][stack.engine_container["args"].index(
        "--override-generation-config") + 1]  # fmt: skip


def test_the_default_system_prompt(stack: Stack) -> None:
    """spec.systemPrompt through the init step's wrapped chat template: a request without a system message is
    prompted exactly as if it had sent the spec's; one with its own system message keeps only its own."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(stack.spec.model.source))
    user = {"role": "user", "content": "Do you repair brakes?"}

    def prompt_tokens(messages: list[dict[str, str]]) -> int:
        body = {"model": "tiny", "messages": messages, "max_tokens": 1}
        return int(stack.request("/v1/chat/completions", body)["usage"]["prompt_tokens"])

    def expected(messages: list[dict[str, str]]) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                 return_dict=False))  # fmt: skip

    with_default = expected([{"role": "system", "content": SYSTEM_PROMPT}, user])
    assert with_default > expected([user])
    assert prompt_tokens([user]) == with_default
    own = [{"role": "system", "content": "Be terse."}, user]
    assert prompt_tokens(own) == expected(own)


def test_modelforge_eval_of_served_models_with_a_served_judge(stack: Stack, tmp_path: Path) -> None:
    """`modelforge eval --endpoint` compares two models the real server serves (an adapter and its base), and the
    same server judges (an LLM as judge, with the API key from an environment variable): real HTTP, real keys."""
    from modelforge.testing import write_eval_dataset

    data = write_eval_dataset(tmp_path / "eval.jsonl", 3)
    url = f"{stack.url}/v1"
    env = {**os.environ, "SERVE_KEY": API_KEY, "WRONG_KEY": "not-the-key"}

    def evaluate(judge_key_env: str, out: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*MODELFORGE, "eval", "--endpoint", url, "--api-key-env", "SERVE_KEY", "--model", "late",
                               "--baseline", "tiny", "--dataset", str(data), "--max-new-tokens", "12",
                               "--judge-endpoint", url, "--judge-model", "tiny", "--judge-api-key-env", judge_key_env,
                               "--output", str(out)], capture_output=True, text=True, env=env, timeout=600)  # fmt: skip

    done = evaluate("SERVE_KEY", tmp_path / "eval")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    scores = {m["name"]: m for m in summary["metrics"]}
    assert summary["rows"] == 3 and "error" not in summary, summary
    # vLLM constrains the judge's reply to the JSON schema: even the tiny model gives a score for every answer.
    assert 0 <= scores["judge"]["tuned"] <= 100 and 0 <= scores["judge"]["base"] <= 100, scores
    rows = [json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    assert all("judge" in r["tuned"]["scores"] and "judge" in r["base"]["scores"] for r in rows), rows
    assert all(r["tuned"]["answer"] != r["base"]["answer"] for r in rows[:1]), rows  # two models answered
    written = "".join(p.read_text(errors="replace") for p in (tmp_path / "eval").iterdir() if p.suffix != ".png")
    assert API_KEY not in written + done.stdout + done.stderr
    # A judge that refuses (a wrong key): the other metrics stand, the judge's words say why.
    refused = evaluate("WRONG_KEY", tmp_path / "refused")
    assert refused.returncode == 0, refused.stderr[-3000:]
    said = json.loads((tmp_path / "refused" / "summary.json").read_text())
    assert "HTTP 401" in said["error"] and {m["name"] for m in said["metrics"]} >= {"rougeL", "judge"}, said
    assert next(m for m in said["metrics"] if m["name"] == "judge").get("tuned") is None
    assert "no judge scores: judge " in refused.stderr and "not-the-key" not in refused.stderr + json.dumps(said)
