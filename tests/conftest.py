"""Shared fixtures: the tiny model is built once per session (no hub, < 1 MB)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
