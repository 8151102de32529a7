"""The images tier: each of ModelForge's images run as a real container with its pod's security context
(tests/images/pod.py), on a Docker engine (scripts/docker.sh) with the images `make images BASE=local` built.

In CI (CI=true) a missing engine or image is a failure, never a skip; elsewhere the tier skips with the
reason and the command that fixes it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelforge.launcher.outcome import EXIT_OK

from .pod import DOCKER, PodRunner, docker, image_name
from .training import STEPS, finetunejob, training_pod, volumes

IMAGES = ("operator", "trainer-cpu", "trainer", "vllm-cpu")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/images/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.images)


def _missing() -> str | None:
    if docker("info", "--format", "{{.ServerVersion}}", check=False).returncode != 0:
        return f"no Docker engine answers ({DOCKER} info fails): run scripts/docker.sh up (as root)"
    absent = [image_name(n) for n in IMAGES if docker("image", "inspect", image_name(n), check=False).returncode]
    if absent:
        return f"images not built: {', '.join(absent)}: run make images BASE=local"
    return None


@pytest.fixture(scope="session", autouse=True)
def images_present() -> None:
    missing = _missing()
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the images tier cannot run: {missing}", pytrace=False)
    pytest.skip(f"images tier skipped: {missing}")


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PodRunner, str, dict[str, Path]]]:
    """One 20-step training pod (trainer-cpu image) to the end: (its runner, the container, the claims)."""
    root = tmp_path_factory.mktemp("train")
    claims = volumes(root)
    pod = training_pod(finetunejob("support", STEPS, 10, merge=True), claims, root / "pod")
    try:
        cid = pod.start("trainer")
        code = pod.wait(cid, 600)
        assert code == EXIT_OK, pod.logs(cid)[-4000:]
        yield pod, cid, claims
    finally:
        pod.remove()
