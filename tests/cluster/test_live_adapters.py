"""Live LoRA adapters on the real control plane, with the REAL vLLM server and the REAL serve agent playing
the serving pod (kwok runs no containers): each runs its container's command and args from the Deployment
the operator applied, bound to the pod's IP, with the pod's mounts mapped to local directories. The test
plays the kubelet for the adapters ConfigMap (it copies the operator's ConfigMap into the "mounted" file).

Proven here: a ModelServe behind an API key is Ready with its models verified and every adapter Loaded
although the operator holds no key and has no RBAC on Secrets; removing an adapter from the spec updates
the ConfigMap, not the Deployment (no rollout), and the agent unloads it from the running engine; the
pod's init step (spec.systemPrompt's chat template) runs first, and the engine prompts with it.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelforge.render.serving import ADAPTERS_DIGEST, CHAT_TEMPLATE_MOUNT, adapters_digest
from tests.integration.vllm_stack import (
    API_KEY,
    MODELFORGE,
    SYSTEM_PROMPT,
    VLLM_MAIN,
    VLLM_VENV,
    container_env,
    require_vllm,
)

from .kube import Kube, stop_process_group
from .operator import OperatorProcess
from .test_modelserve import PVC_ROOT, ready_pods, serve_status


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


class Pod:
    """One serving pod's engine and agent, run here from the pod's own spec."""

    def __init__(self, pod: dict[str, Any], mounts: dict[str, Path], workdir: Path):
        self.ip = pod["status"]["podIP"]
        self.mounts = mounts
        self.adapters_file = workdir / "adapters.json"
        engine, agent = _container(pod, "engine"), _container(pod, "agent")
        assert engine["command"] == ["vllm", "serve"] and agent["command"] == ["modelforge"]
        for init in pod["spec"].get("initContainers", []):  # the kubelet runs them first, each to its end
            assert init["command"] == ["modelforge"], init
            done = subprocess.run([str(MODELFORGE), *(self.local(a) for a in init["args"])], capture_output=True,
                                  text=True, env=container_env(init), timeout=60)  # fmt: skip
            assert done.returncode == 0, f"init container {init['name']}: {done.stderr}"
        args = [self.local(a) for a in engine["args"]]
        args[args.index("--host") + 1] = self.ip  # the pod's port, 8000, on the pod's address
        with open(workdir / "engine.log", "ab") as log:
            self.engine = subprocess.Popen(
                [str(VLLM_VENV / "bin" / "python"), str(VLLM_MAIN), "serve", *args],
                env={**container_env(engine), "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        agent_args = list(agent["args"])
        agent_args[agent_args.index("--engine") + 1] = f"http://{self.ip}:8000"  # 127.0.0.1 inside the pod
        agent_args[agent_args.index("--adapters") + 1] = str(self.adapters_file)
        agent_args += ["--host", self.ip, "--interval", "1"]
        with open(workdir / "agent.log", "ab") as log:
            self.agent = subprocess.Popen([str(MODELFORGE), *agent_args], env=container_env(agent), stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)  # fmt: skip
        self.workdir = workdir

    def local(self, text: str) -> str:
        for pod_path, local in self.mounts.items():
            text = text.replace(pod_path, str(local))
        return text

    def mount_config_map(self, config_map: dict[str, Any]) -> None:
        """The kubelet refreshing the mounted ConfigMap (atomically, as it does with a symlink swap)."""
        tmp = self.adapters_file.with_suffix(".tmp")
        tmp.write_text(self.local(config_map["data"]["adapters.json"]))
        tmp.replace(self.adapters_file)

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        body = json.dumps({"model": "chat", "messages": messages, "max_tokens": 1}).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
        request = urllib.request.Request(f"http://{self.ip}:8000/v1/chat/completions", body, headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(json.loads(response.read())["usage"]["prompt_tokens"])

    def stop(self) -> None:
        for proc in (self.agent, self.engine):
            stop_process_group(proc, grace=20)

    def logs(self) -> str:
        return "\n".join((self.workdir / f"{n}.log").read_text(errors="replace")[-2000:] for n in ("engine", "agent"))


@pytest.fixture(scope="module")
def adapters(request: pytest.FixtureRequest) -> tuple[Path, Path, Path]:
    require_vllm()  # before training: a missing vLLM is said at once
    return request.getfixturevalue("tiny_adapters")


@pytest.fixture
def models_root(kube: Kube, ns: str, adapters: tuple[Path, Path, Path], tmp_path: Path) -> Iterator[Path]:
    kube.claim(ns, "models")
    root = tmp_path / "pvc-models"
    root.mkdir()
    for name, path in zip(("tiny128", "early", "late"), adapters, strict=True):
        (root / name).symlink_to(path, target_is_directory=True)
    yield root


def adapter_states(kube: Kube, ns: str) -> dict[str, str]:
    return {a["name"]: a["state"] for a in serve_status(kube, ns).get("adapters") or []}


def test_live_adapters_behind_an_api_key(kube: Kube, operator: OperatorProcess, ns: str, models_root: Path,
                                         tmp_path: Path) -> None:  # fmt: skip
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "serve-key", "namespace": ns},
                 "stringData": {"key": API_KEY}})  # fmt: skip
    kube.create({"apiVersion": "modelforge.io/v1alpha1", "kind": "ModelServe",
                 "metadata": {"name": "chat", "namespace": ns},
                 "spec": {"model": {"source": "pvc://models/tiny128"}, "maxModelLen": 512, "maxLoraRank": 8,
                          "dtype": "float32", "apiKeySecretRef": {"name": "serve-key", "key": "key"},
                          "systemPrompt": SYSTEM_PROMPT,
                          "adapters": [{"name": "early", "source": "pvc://models/early"},
                                       {"name": "late", "source": "pvc://models/late"}]}})  # fmt: skip
    config_map = kube.wait_for(lambda: kube.get("ConfigMap", ns, "chat-adapters"), 30, "the adapters ConfigMap")
    assert [a["name"] for a in json.loads(config_map["data"]["adapters.json"])] == ["early", "late"]
    pod_object = ready_pods(kube, ns, "chat", 1)[0]
    assert [c["name"] for c in pod_object["spec"]["initContainers"]] == ["chat-template"]
    mounts = {f"{PVC_ROOT}/models": models_root, CHAT_TEMPLATE_MOUNT: tmp_path / "chat-template"}
    pod = Pod(pod_object, mounts, tmp_path)
    try:
        pod.mount_config_map(config_map)
        kube.wait_for(lambda: serve_status(kube, ns).get("phase") == "Ready", 240,
                      f"phase Ready (logs:\n{pod.logs()})")  # fmt: skip
        st = serve_status(kube, ns)
        assert sorted(st["models"]) == ["chat", "early", "late"], st
        assert adapter_states(kube, ns) == {"early": "Loaded", "late": "Loaded"}, st
        assert "not verified" not in json.dumps(st["conditions"])
        assert API_KEY not in json.dumps(kube.get("ModelServe", ns, "chat"))
        # spec.systemPrompt, through the init step's template: the same prompt as sending it oneself.
        asked = [{"role": "user", "content": "Do you repair brakes?"}]
        sent = [{"role": "system", "content": SYSTEM_PROMPT}, *asked]
        other = [{"role": "system", "content": "x"}, *asked]
        assert pod.prompt_tokens(asked) == pod.prompt_tokens(sent) > pod.prompt_tokens(other)

        # Remove `early` from the spec: the ConfigMap changes, the Deployment does not (no rollout).
        before = kube.get("Deployment", ns, "chat")
        replica_sets = {rs["metadata"]["name"] for rs in kube.list("ReplicaSet", ns)}
        kube.patch("ModelServe", ns, "chat", {"spec": {"adapters": [{"name": "late", "source": "pvc://models/late"}]}})
        changed = kube.wait_for(lambda: (c := kube.get("ConfigMap", ns, "chat-adapters")) and "early" not in
                                c["data"]["adapters.json"] and c, 30, "the ConfigMap without early")  # fmt: skip
        # The pod is annotated with the new list's digest: the patch is what makes a real kubelet refresh the
        # mounted copy at once (tests/e2e times it); here the test plays the kubelet.
        name = pod_object["metadata"]["name"]
        digest = adapters_digest(changed)

        def told() -> bool:
            annotations = (kube.get("Pod", ns, name) or {}).get("metadata", {}).get("annotations") or {}
            return annotations.get(ADAPTERS_DIGEST) == digest

        kube.wait_for(told, 30, "the pod annotated with the new adapters' digest")
        pod.mount_config_map(changed)

        def unloaded() -> bool:
            return adapter_states(kube, ns) == {"late": "Loaded"} and "early" not in serve_status(kube, ns)["models"]

        kube.wait_for(unloaded, 60, "early unloaded live")
        after = kube.get("Deployment", ns, "chat")
        assert after["metadata"]["generation"] == before["metadata"]["generation"], "the Deployment changed"
        assert {rs["metadata"]["name"] for rs in kube.list("ReplicaSet", ns)} == replica_sets
        assert pod.engine.poll() is None  # the same engine process, never restarted
        assert serve_status(kube, ns)["phase"] == "Ready"
    finally:
        pod.stop()
