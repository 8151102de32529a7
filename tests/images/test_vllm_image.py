"""The vLLM CPU image serves a ModelServe's pod as rendered: the chat-template init step and the serve agent
(operator image) beside vLLM (vllm-cpu image), sharing the pod's network, with the API key from a Secret.
The agent loads the fine-tune's adapter into the running engine (vLLM's runtime LoRA API); /v1/models lists
base and adapter; the official OpenAI client gets answers from both."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from modelforge.render.manifests import render_resource

from .pod import PodRunner, http_json, wait_http
from .training import SETTINGS

KEY = "images-tier-key-not-a-secret"  # a throwaway key for a container on the test's own network


def test_vllm_serves_the_base_and_a_live_adapter(trained, tmp_path):
    """Rendered for one GPU (vLLM's default); only the GPU is simulated: the container runs vLLM's CPU backend."""
    _, _, claims = trained
    doc = {"apiVersion": "modelforge.io/v1alpha1", "kind": "ModelServe",
           "metadata": {"name": "tiny", "namespace": "images"},
           "spec": {"model": {"source": "pvc://models/tiny"}, "engine": "vllm", "maxModelLen": 512, "dtype": "float32",
                    "adapters": [{"name": "support", "source": "pvc://output/support/run/checkpoint-20"}],
                    "maxLoraRank": 8, "systemPrompt": "You are the support assistant of a bicycle shop.",
                    "apiKeySecretRef": {"name": "serve-key", "key": "key"}}}  # fmt: skip
    children = {c["kind"]: c for c in render_resource(doc, SETTINGS)}
    template = children["Deployment"]["spec"]["template"]
    adapters = children["ConfigMap"]
    pod = PodRunner(
        template["spec"], tmp_path / "pod", claims={"models": claims["models"], "output": claims["output"]},
        config_maps={adapters["metadata"]["name"]: adapters["data"]}, secrets={"serve-key": {"key": KEY}},
        metadata={"name": "tiny-abc", "namespace": "images", "labels": template["metadata"]["labels"]},
        # a KV cache sized for a 2-core CI machine (vLLM's CPU default assumes a server)
        extra_env={"VLLM_CPU_KVCACHE_SPACE": "1"},
    )  # fmt: skip
    try:
        (init,) = template["spec"]["initContainers"]
        step = pod.start(init["name"])
        assert pod.wait(step, 120) == 0, pod.logs(step)
        engine = pod.start("engine")
        agent = pod.start("agent")
        base = f"http://{pod.ip}:8000"
        started = time.monotonic()
        wait_http(pod, engine, f"{base}/health", 300)
        print(f"\nvLLM in its container: /health after {time.monotonic() - started:.0f} s")
        deadline = time.monotonic() + 120
        while True:  # the agent's report: what it loaded into the engine
            try:
                report = http_json(f"http://{pod.ip}:8091/adapters", timeout=5)
                if [(a["name"], a["state"]) for a in report["adapters"]] == [("support", "Loaded")]:
                    break
            except OSError:
                report = None
            assert time.monotonic() < deadline, (report, pod.logs(agent)[-3000:])
            assert pod.wait_running(agent), pod.logs(agent)[-3000:]
            time.sleep(1)
        listed = {m["id"]: m.get("parent") for m in http_json(f"{base}/v1/models", key=KEY)["data"]}
        assert listed == {"tiny": None, "support": "tiny"}, listed
        script = (
            "import json, sys\nfrom openai import OpenAI\n"
            "client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2])\nout = {}\n"
            "for model in ('tiny', 'support'):\n"
            "    chat = client.chat.completions.create(model=model, max_tokens=8,\n"
            "                                          messages=[{'role': 'user', 'content': 'hello'}])\n"
            "    out[model] = [chat.model, chat.usage.completion_tokens]\n"
            "print(json.dumps(out))\n"
        )
        done = subprocess.run([sys.executable, "-c", script, f"{base}/v1", KEY], capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        answers = json.loads(done.stdout.splitlines()[-1])
        assert {m: a[0] for m, a in answers.items()} == {"tiny": "tiny", "support": "support"}, answers
        assert all(a[1] > 0 for a in answers.values()), answers
        # A request without the key is refused: the Secret's key reached the engine through its env.
        try:
            http_json(f"{base}/v1/models")
            raise AssertionError("vLLM answered /v1/models without the API key")
        except OSError as refused:
            assert "401" in str(refused), refused
        assert KEY not in " ".join(pod.logs(engine).split()), "the API key reached the engine's log"
    finally:
        pod.remove()
