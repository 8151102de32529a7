"""Shared fixtures: the tiny model is built once per session (no hub, < 1 MB)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (scripts/test.sh stopping its background pytest, a CI timeout) ends the run as Ctrl-C does: the
    fixtures' teardowns stop the servers and process groups they started."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


OFFLINE = {
    "USE_HF": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "MODELSCOPE_OFFLINE": "1",
}  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def offline_environment():
    """No test may reach a model or dataset hub."""
    saved = {k: os.environ.get(k) for k in OFFLINE}
    os.environ.update(OFFLINE)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from modelforge.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_adapters(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(tiny model with hidden 128, LoRA checkpoint at step 20, at step 40): one real `swift sft` run per test
    run, shared read-only by every tier that serves adapters (the cluster tier's live adapters, vLLM).
    scripts/test.sh's two pytest processes share it through MODELFORGE_TEST_SHARED, a directory it makes for
    the run: the first to get there trains under a file lock, the other waits and reads."""
    from tests.integration.vllm_stack import train_adapters

    shared = os.environ.get("MODELFORGE_TEST_SHARED")
    if not shared:
        return train_adapters(tmp_path_factory.mktemp("tiny-adapters"))
    root, done = Path(shared) / "tiny-adapters", Path(shared) / "tiny-adapters.json"
    with open(Path(shared) / "tiny-adapters.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when a holder dies
        if done.exists():
            model, early, late = (Path(p) for p in json.loads(done.read_text()))
            return model, early, late
        shutil.rmtree(root, ignore_errors=True)  # a holder that died half-way
        trained = train_adapters(root)
        done.write_text(json.dumps([str(p) for p in trained]))
        return trained
