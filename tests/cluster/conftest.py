"""The cluster tier: the operator against a real local control plane (tests/cluster/controlplane.py).

A session fixture starts the control plane, or reuses one that `make cluster` started (and then leaves it
running). In CI a control plane that cannot start is a failure, never a skip. Each test gets a fresh
namespace; each module installs the chart and runs the operator as the chart's ServiceAccount.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

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


KUBERAY_CRD = Path(__file__).resolve().parents[1] / "data" / "kuberay" / "ray.io_rayjobs.json"


@pytest.fixture(scope="session")
def kube(kubeconfig: Path) -> Kube:
    """The admin's client, on a control plane that also has KubeRay's RayJob CRD (tests/data/kuberay): the
    ray runtime's attempts are RayJobs. No KubeRay operator runs; tests/cluster/test_rayjob.py plays it."""
    kube = Kube(kubeconfig)
    crd = json.loads(KUBERAY_CRD.read_text())
    if kube.get("CustomResourceDefinition", None, crd["metadata"]["name"]) is None:
        kube.create(crd)

    def established() -> bool:
        got = kube.get("CustomResourceDefinition", None, crd["metadata"]["name"]) or {}
        return any(c["type"] == "Established" and c["status"] == "True"
                   for c in (got.get("status") or {}).get("conditions") or [])  # fmt: skip

    kube.wait_for(established, 30, "KubeRay's RayJob CRD established")
    return kube


@pytest.fixture
def ns(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    name = kube.namespace("t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower().removeprefix("test_")))
    yield name
    kube.check_loopback()
    kube.delete("Namespace", None, name)
    # Its pods hold GPUs of the three fake nodes: the next test must find them free. The namespace
    # controller takes ~5 s to get to them (measured); a Terminating namespace refuses new pods, so
    # deleting them now, without a grace period (no container runs), frees the GPUs at once.
    with contextlib.suppress(ApiException):
        kube.request("DELETE", f"/api/v1/namespaces/{name}/pods", {"gracePeriodSeconds": 0})
    # A pod never scheduled (more GPUs than any node has) keeps the Job controller's finalizer until the pod
    # garbage collector marks it Failed, on its fixed 20 s period (measured: 18-21 s per such test); do its job.
    for pod in kube.list("Pod", name):
        if not pod["spec"].get("nodeName") and pod.get("status", {}).get("phase") not in ("Failed", "Succeeded"):
            with contextlib.suppress(ApiException):
                kube.patch("Pod", name, pod["metadata"]["name"], {"status": {"phase": "Failed"}}, "status")
    kube.wait_for(lambda: not kube.list("Pod", name), 60, f"the pods of {name} gone")


@pytest.fixture
def claims(kube: Kube, ns: str) -> str:
    """The test's namespace with Bound claims `data` and `models` (pods that mount them can be scheduled)."""
    kube.claim(ns, "data")
    kube.claim(ns, "models")
    return ns


@pytest.fixture(scope="module")
def operator(kube: Kube, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The chart installed cluster-wide and its operator running (one per test module)."""
    # ray.enabled: the ray runtime's RayJobs too (KubeRay's CRD is installed by `kube`).
    release = Release(kubeconfig, values={"ray.enabled": "true"})  # its ports are picked free by OperatorProcess
    op = OperatorProcess(release, tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()
    forbidden = op.forbidden()
    release.uninstall()
    assert not forbidden, "the API server refused the operator (chart RBAC):\n" + "\n".join(forbidden[:10])
