"""The cluster tier: the operator against a real local control plane (tests/cluster/controlplane.py).

A session fixture starts the control plane, or reuses one that `make cluster` started (and then leaves it
running). In CI a control plane that cannot start is a failure, never a skip. Each test gets a fresh
namespace; each module installs the chart and runs the operator as the chart's ServiceAccount.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import controlplane
from .kube import Kube
from .operator import OperatorProcess, Release


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[Path]:
    was_up = controlplane.status_quiet()
    try:
        controlplane.up()
    except SystemExit as exc:
        pytest.fail(f"the local control plane did not start: {exc}", pytrace=False)
    yield controlplane.kubeconfig_path()
    if not was_up:
        controlplane.down()


@pytest.fixture(scope="session")
def kube(kubeconfig: Path) -> Kube:
    return Kube(kubeconfig)


@pytest.fixture
def ns(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    name = kube.namespace("t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower().removeprefix("test_")))
    yield name
    kube.check_loopback()
    kube.delete("Namespace", None, name)
    # Its pods hold GPUs of the three fake nodes: the next test must find them free.
    kube.wait_for(lambda: not kube.list("Pod", name), 60, f"the pods of {name} gone")


@pytest.fixture
def claims(kube: Kube, ns: str) -> str:
    """The test's namespace with Bound claims `data` and `models` (pods that mount them can be scheduled)."""
    kube.claim(ns, "data")
    kube.claim(ns, "models")
    return ns


@pytest.fixture(scope="module")
def operator(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The chart installed cluster-wide and its operator running (one per test module)."""
    release = Release(kubeconfig)  # the operator's own ports are picked free by OperatorProcess
    op = OperatorProcess(release, tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()
    forbidden = op.forbidden()
    release.uninstall()
    assert not forbidden, "the API server refused the operator (chart RBAC):\n" + "\n".join(forbidden[:10])
