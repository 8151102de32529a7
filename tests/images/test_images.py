"""Every image: exactly its lock (locks/*.txt: the versions the tests' venv has; the vLLM image's own), user
10001, each one's Python environment importable under the pod's restrictions (read-only root, no capabilities,
no network)."""

from __future__ import annotations

import json

import pytest

from tests.locks import IMAGE_LOCKS, key, locked

from .conftest import IMAGES
from .pod import docker, image_name

RESTRICTED = ["--rm", "--read-only", "--tmpfs", "/tmp", "--user", "10001:10001", "--cap-drop", "ALL",
              "--security-opt", "no-new-privileges", "--network", "none"]  # fmt: skip
NOT_FROZEN = {"pip", "setuptools", "wheel"}  # `pip freeze` leaves these out


@pytest.mark.parametrize("name", IMAGES)
def test_every_package_in_the_image_is_its_locks(name):
    frozen = docker("run", "--rm", "--entrypoint", "pip", image_name(name), "freeze", "--exclude-editable").stdout
    found = {}
    for line in frozen.splitlines():
        if not line.startswith("modelforge @"):
            package, version = line.split("==")
            found[key(package)] = version
    lock = {n: v for n, v in locked(IMAGE_LOCKS[name]).items() if n not in NOT_FROZEN}
    off_lock = {n: (v, lock.get(n, "absent")) for n, v in found.items() if lock.get(n) != v}
    assert not off_lock, f"{name} vs locks/{IMAGE_LOCKS[name]}.txt (image, lock): {off_lock}"
    assert set(lock) == set(found), f"locked, not in the image: {sorted(set(lock) - set(found))}"
    if name == "operator":
        assert "torch" not in found  # the operator stays lean
    else:
        assert found["torch"] == locked("venv")["torch"]  # one torch everywhere, vLLM's image included


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
