"""Every image: built from constraints.txt (the versions the tests' venv has), user 10001, each one's Python
environment importable under the pod's restrictions (read-only root, no capabilities, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import IMAGES
from .pod import docker, image_name

ROOT = Path(__file__).resolve().parents[2]
RESTRICTED = ["--rm", "--read-only", "--tmpfs", "/tmp", "--user", "10001:10001", "--cap-drop", "ALL",
              "--security-opt", "no-new-privileges", "--network", "none"]  # fmt: skip


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


@pytest.mark.parametrize("name", IMAGES)
def test_every_package_in_the_image_has_the_locked_version(name):
    frozen = docker("run", "--rm", "--entrypoint", "pip", image_name(name), "freeze", "--exclude-editable").stdout
    pins = locked()
    found, off_lock = {}, []
    for line in frozen.splitlines():
        if line.startswith("modelforge @"):
            continue
        package, version = line.split("==")
        key = package.lower().replace("_", "-")
        found[key] = version
        if name != "vllm-cpu" and pins.get(key) != version:  # vLLM's venv has pins of its own (get-vllm.sh)
            off_lock.append(f"{package}=={version} (lock: {pins.get(key, 'absent')})")
    assert not off_lock, off_lock
    if name == "operator":
        assert "torch" not in found  # the operator stays lean
    else:
        assert found["torch"] == pins["torch"]  # one torch everywhere, vLLM's image included


@pytest.mark.parametrize(
    ("name", "code"),
    [("operator", "import kopf, kubernetes, modelforge.controller.handlers"),
     ("trainer-cpu", "import torch, transformers, peft, swift, deepspeed, ray, modelforge.launcher.run"),
     ("trainer", "import torch, deepspeed, swift, bitsandbytes, liger_kernel, modelforge.launcher.run"),
     ("vllm-cpu", "import vllm, torch, openai")],
)  # fmt: skip
def test_the_python_environment_resolves_as_user_10001_on_a_read_only_root(name, code):
    script = f"import os; {code}; print(os.getuid(), os.getgid())"
    done = docker("run", *RESTRICTED, "--entrypoint", "python3", image_name(name), "-c", script, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "10001 10001", done.stdout + done.stderr


def test_the_cuda_trainer_image_starts_the_launcher():
    done = docker("run", *RESTRICTED, image_name("trainer"), "--help", timeout=120)
    assert "usage: modelforge launch" in done.stdout, done.stdout + done.stderr


def test_the_images_share_their_heavy_layers():
    """torch is one layer of the trainer, trainer-cpu and vLLM images (built once, stored once)."""
    layers = {n: docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", image_name(n)).stdout
              for n in ("trainer-cpu", "trainer", "vllm-cpu")}  # fmt: skip
    cpu, cuda, vllm = (json.loads(layers[n]) for n in ("trainer-cpu", "trainer", "vllm-cpu"))
    assert cuda[: len(cpu) - 3] == cpu[: len(cpu) - 3]  # trainer = trainer-cpu's dependency layers + its own
    torch_layers = [layer for layer in cpu if layer in vllm]
    assert len(torch_layers) >= 3, torch_layers  # base, venv, torch at least
