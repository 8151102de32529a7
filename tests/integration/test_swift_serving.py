"""The REAL swift engine on CPU: serve the tiny model merged from a real fine-tune with the exact command
the renderer builds, then `modelforge chat` and `modelforge infer` get answers over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from modelforge.api.modelserve import ModelServeSpec
from modelforge.render.serving import ResolvedModel, SwiftEngine
from tests.integration.test_local_run import run, summary, write_spec

pytestmark = pytest.mark.integration
MODELFORGE = [sys.executable, "-m", "modelforge.cli"]
API_KEY = "test-key-not-a-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="module")
def merged_model(tmp_path_factory, tiny_model) -> Path:
    tmp = tmp_path_factory.mktemp("serve")
    spec = write_spec(tmp, tiny_model, output={"claimName": "local", "merge": True})
    result = run(spec, tmp / "out")
    assert result.returncode == 0, result.stderr
    return Path(summary(tmp / "out")["outputs"]["mergedModel"])


def test_swift_engine_serves_chat_and_infer(merged_model, tmp_path):
    spec = ModelServeSpec.model_validate({
        "model": {"source": str(merged_model)}, "engine": "swift", "resources": {"gpusPerReplica": 0},
        "apiKeySecretRef": {"name": "serve-key", "key": "key"}, "maxModelLen": 512,
        "sampling": {"temperature": 0, "maxTokens": 5},
    })  # fmt: skip
    command, args = SwiftEngine().container_command(spec, ResolvedModel(str(merged_model)), "tiny")
    assert command == ["python", "-m", "modelforge.launcher.swift_serve"]
    assert API_KEY not in " ".join(args) and "--api_key" not in args
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    args[args.index("--host") + 1] = "127.0.0.1"
    # The key as the kubelet gives it: the environment variable from the Secret reference.
    env = {**os.environ, "SERVE_KEY": API_KEY, "MODELFORGE_API_KEY": API_KEY}
    log = tmp_path / "engine.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "modelforge.launcher.swift_serve", *args], env=env,
                                  stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}/v1"
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", server)
        chat = subprocess.run(
            [*MODELFORGE, "chat", "--endpoint", endpoint, "--api-key-env", "SERVE_KEY", "--max-new-tokens", "12",
             "How do I reset my password?"], capture_output=True, text=True, env=env, timeout=300, check=False,
        )  # fmt: skip
        assert chat.returncode == 0, chat.stderr
        assert "[tiny:" in chat.stderr and " s" in chat.stderr  # model name and latency

        unauthorized = subprocess.run([*MODELFORGE, "chat", "--endpoint", endpoint, "hi"], capture_output=True,
                                      text=True, env=env, timeout=300, check=False)  # fmt: skip
        assert unauthorized.returncode == 1 and "pass the key with --api-key-env" in unauthorized.stderr

        questions = tmp_path / "questions.jsonl"
        questions.write_text(json.dumps({"query": "How do I track my order?"}) + "\n"
                             + json.dumps({"messages": [{"role": "user", "content": "Hello"}]}) + "\n")  # fmt: skip
        output = tmp_path / "results.jsonl"
        infer = subprocess.run(
            [*MODELFORGE, "infer", "--endpoint", endpoint, "--api-key-env", "SERVE_KEY", "--questions",
             str(questions), "--output", str(output), "--max-new-tokens", "8"],
            capture_output=True, text=True, env=env, timeout=300, check=False,
        )  # fmt: skip
        assert infer.returncode == 0, infer.stderr
        rows = [json.loads(line) for line in output.read_text().splitlines()]
        assert [r["messages"][-1]["content"] for r in rows] == ["How do I track my order?", "Hello"]
        for row in rows:
            assert row["model"] == "tiny" and isinstance(row["response"], str)
            assert row["latency_s"] > 0 and row["completion_tokens"] > 0 and row["tokens_per_second"] > 0
        assert "latency mean" in infer.stdout

        # spec.sampling: a request that sets no max_tokens stops at sampling.maxTokens (swift deploy's default).
        request = urllib.request.Request(f"{endpoint}/chat/completions", json.dumps({
            "model": "tiny", "messages": [{"role": "user", "content": "Tell me a long story."}]}).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=120) as response:
            usage = json.loads(response.read())["usage"]
        assert 0 < usage["completion_tokens"] <= 5, usage
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert server.returncode is not None
    text = log.read_text(errors="replace")
    assert "args: DeployArguments" in text and API_KEY not in text  # ms-swift logged its args, not the key
