"""constraints.txt is the lock: the running venv (made by `make setup` from it) has exactly its versions, and
it pins everything that venv has. The images tier checks each image against the same file."""

from __future__ import annotations

import re
from importlib.metadata import distributions
from pathlib import Path

LOCK = Path(__file__).resolve().parents[2] / "constraints.txt"
IMAGE_ONLY = {"bitsandbytes", "liger-kernel"}  # the CUDA trainer image's own (images/trainer/Dockerfile)
TOOLING = {"pip", "setuptools", "wheel", "modelforge"}  # the venv's own tooling, and the project itself


def key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    lines = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    return {key(name): version for name, version in (line.split("==") for line in lines)}


def test_the_lock_pins_exact_versions_once_each():
    lines = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.+!-]+", line) for line in lines), lines
    assert len(pins()) == len(lines)


def test_the_venv_has_exactly_the_locked_versions():
    locked = pins()
    installed = {key(d.metadata["Name"]): d.version for d in distributions()}
    installed = {name: version for name, version in installed.items() if name not in TOOLING}
    differ = {n: (v, locked.get(n)) for n, v in installed.items() if locked.get(n) != v}
    assert not differ, f"venv vs constraints.txt (run make setup, or make lock after changing pyproject.toml): {differ}"
    missing = set(locked) - set(installed) - IMAGE_ONLY
    assert not missing, f"pinned but not in the venv (make lock drops them): {sorted(missing)}"
