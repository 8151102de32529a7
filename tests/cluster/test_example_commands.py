"""Every example applies with the exact `kubectl` commands its README gives, in a fresh namespace (the current
context's, as a user's), with the chart installed and the operator running, and reaches the state the README
promises. Nothing it refers to is missing: no FineTuneJob or ModelServe waits on a claim, ConfigMap or Secret
that the commands did not create."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .kube import ROOT, Kube
from .operator import OperatorProcess

EXAMPLES = ROOT / "examples"
# What each README promises right after its commands (on this control plane: kwok GPU nodes, no engine runs).
PROMISED: dict[str, dict[str, Any]] = {
    # the README's own first example, from the repository root
    "README.md": {"FineTuneJob/base-formats": {"phase": {"Starting", "Running"}}},
    "qwen3-8b-base-formats": {"FineTuneJob/base-formats": {"phase": {"Starting", "Running"}}},
    "llama2-13b-qlora-24gb": {"FineTuneJob/llama2-13b-instruct": {"phase": {"Starting", "Running"}}},
    # refused before any pod, naming the cheapest fix
    "qwen3-8b-qlora": {
        "FineTuneJob/support-assistant": {
            "phase": {"Failed"},
            "reason": "InsufficientGPUMemory",
            "says": "lora.rank: 16",
        }
    },
    "qwen3-30b-a3b-full": {
        "FineTuneJob/a3b-thinking-full": {"phase": {"Starting", "Queued", "Running"}},
        "ModelServe/a3b": {"reason": "WaitingForModel"},
    },
    "multi-lora-serving": {"ModelServe/assistants": {"reason": "WaitingForModel"}},
    "multimodal": {"FineTuneJob/receipt-reader": {"phase": {"Starting", "Running"}}},
}


def commands(readme: Path) -> list[str]:
    """The `kubectl apply` / `kubectl create` lines of the README's shell blocks, verbatim (comments dropped)."""
    found = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", readme.read_text(), re.S):
        for line in block.splitlines():
            line = line.removeprefix("$ ").split("  #")[0].strip()
            if re.match(r"kubectl( -n \S+)? (apply|create) ", line):
                found.append(line)
    return found


# Examples whose commands need the real Kueue: tests/cluster/test_kueue.py runs them, with Kueue up.
WITH_KUEUE = {"kueue-two-teams"}


def test_every_example_has_a_promise() -> None:
    readmes = {p.parent.name for p in EXAMPLES.glob("*/README.md") if commands(p)}
    assert readmes == (set(PROMISED) - {"README.md"}) | WITH_KUEUE, readmes


def user_kubeconfig(admin: Path, namespace: str, dest: Path) -> Path:
    """The admin's kubeconfig with `namespace` as the current context's namespace (`kubectl config set-context
    --current --namespace`), as a user working in that namespace has it."""
    config = yaml.safe_load(admin.read_text())
    for context in config["contexts"]:
        context["context"]["namespace"] = namespace
    dest.write_text(yaml.safe_dump(config))
    return dest


def condition_reasons(status: dict[str, Any]) -> list[str]:
    return [c.get("reason", "") for c in status.get("conditions") or []]


@pytest.mark.parametrize("example", sorted(PROMISED))
def test_the_readme_commands_work_as_written(kube: Kube, kubeconfig: Path, operator: OperatorProcess, ns: str,
                                             tmp_path: Path, example: str) -> None:  # fmt: skip
    readme = ROOT / example if example == "README.md" else EXAMPLES / example / "README.md"
    lines = commands(readme)
    assert lines, f"{readme}: no kubectl apply command"
    env = {**os.environ, "KUBECONFIG": str(user_kubeconfig(kubeconfig, ns, tmp_path / "kubeconfig")),
           "PATH": f"{ROOT / '.tools' / 'bin'}:{os.environ['PATH']}", "HF_TOKEN": "hf_not_a_real_token"}  # fmt: skip
    for line in lines:
        done = subprocess.run(["bash", "-c", line], cwd=readme.parent, env=env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, f"{readme}: `{line}` failed:\n{done.stderr}"

    def reached() -> dict[str, Any] | None:
        seen = {}
        for target, promise in PROMISED[example].items():
            kind, name = target.split("/")
            obj = kube.get(kind, ns, name)
            status = (obj or {}).get("status") or {}
            seen[target] = status
            if not status.get("conditions"):
                return None
            if "phase" in promise and status.get("phase") not in promise["phase"]:
                return None
            if "reason" in promise and promise["reason"] not in condition_reasons(status):
                return None
        return seen

    try:
        seen = kube.wait_for(reached, 45, f"the state {readme.relative_to(ROOT)} promises")
    except AssertionError:
        states = {t: kube.get(t.split("/")[0], ns, t.split("/")[1]) for t in PROMISED[example]}
        raise AssertionError(f"{example}: { ({t: (o or {}).get('status') for t, o in states.items()}) }") from None
    for target, promise in PROMISED[example].items():
        messages = " ".join(c.get("message", "") for c in seen[target].get("conditions") or [])
        missing = re.findall(r'(?:persistentvolumeclaims?|configmaps?|secrets?) "[^"]+" not found', messages)
        assert not missing, f"{target} refers to something the commands did not create: {messages}"
        if "says" in promise:
            assert promise["says"] in messages, messages
