"""The Helm chart on the real API server: CRDs (structural schema and CEL cost checks), RBAC for both
scopes, `kubectl explain` and printer columns, and `helm uninstall` while FineTuneJobs exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml

from .kube import Kube, helm, kubectl
from .operator import OperatorProcess, Release
from .test_finetunejob import condition, finetunejob, running_pods, status

CRDS = {"FineTuneJob": "finetunejobs.modelforge.io", "ModelServe": "modelserves.modelforge.io"}


@pytest.mark.parametrize(
    ("field", "expected"),
    [("finetunejob.spec.lora", "LoRA shape"), ("finetunejob.spec.resources.gpusPerNode", "GPUs"),
     ("modelserve.spec.tensorParallel", "attention head count"), ("finetunejob.status.progress", "Training progress")],
)  # fmt: skip
def test_kubectl_explain_shows_the_descriptions(operator: OperatorProcess, kubeconfig: Path, field: str,
                                                expected: str) -> None:  # fmt: skip
    out = kubectl(kubeconfig, "explain", field).stdout
    assert "DESCRIPTION" in out or "FIELD" in out, out
    assert expected in out, out


def test_get_shows_printer_columns_with_values(kube: Kube, operator: OperatorProcess, ns: str,
                                               kubeconfig: Path) -> None:  # fmt: skip
    kube.claim(ns, "data")
    kube.claim(ns, "models")
    kube.create(finetunejob(ns, method="qlora", resources={"gpusPerNode": 2}))
    running_pods(kube, ns, "sft", 1, 1)
    kube.wait_for(lambda: status(kube, ns).get("phase") == "Running", 30, "phase Running")
    kube.create({"apiVersion": "modelforge.io/v1alpha1", "kind": "ModelServe",
                 "metadata": {"name": "chat", "namespace": ns},
                 "spec": {"model": {"fromFineTuneJob": "sft"}}})  # fmt: skip
    kube.wait_for(lambda: (kube.get("ModelServe", ns, "chat") or {}).get("status", {}).get("phase"), 30,
                  "the ModelServe's phase")  # fmt: skip
    table = kubectl(kubeconfig, "get", "ftj,mserve", "-n", ns).stdout
    header_ftj = table.splitlines()[0].split()
    assert header_ftj[:5] == ["NAME", "PHASE", "KUEUE", "METHOD", "GPUS"], table
    row = next(line.split() for line in table.splitlines() if line.startswith("finetunejob"))
    assert row[1] == "Running" and row[2] == "qlora" and row[3] == "2", table  # KUEUE empty: no queue
    serve_row = next(line for line in table.splitlines() if line.startswith("modelserve"))
    assert "Pending" in serve_row, table  # waits for the job
    # Conditions are the API: each says which spec generation it was computed from.
    for kind, name in (("FineTuneJob", "sft"), ("ModelServe", "chat")):
        conditions = kube.get(kind, ns, name)["status"]["conditions"]
        assert conditions and all(c["observedGeneration"] == 1 for c in conditions), conditions
    # As a user reads them: every status written under the field manager `modelforge` and valid against the
    # status schema of the CRD the API server serves.
    listed = yaml.safe_load(
        kubectl(kubeconfig, "get", "ftj,mserve", "-n", ns, "-o", "yaml", "--show-managed-fields").stdout
    )
    assert len(listed["items"]) == 2
    for obj in listed["items"]:
        managers = {(m["manager"], m.get("subresource")) for m in obj["metadata"]["managedFields"]}
        assert ("modelforge", "status") in managers, managers
        crd = kube.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRDS[obj['kind']]}")
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        jsonschema.validate(obj["status"], schema)


def test_invalid_spec_is_refused_before_any_pod(kube: Kube, operator: OperatorProcess, ns: str) -> None:
    """Judged by the planner (not expressible in the schema): Failed with Validated=False, no Job."""
    too_big = finetunejob(ns, method="qlora", lora={"rank": 64, "alpha": 128}, resources={"gpuMemory": "8Gi"},
                          hyperparameters={"maxSteps": 10, "maxLength": 1024})  # fmt: skip
    kube.create(too_big)
    kube.wait_for(lambda: status(kube, ns).get("phase") == "Failed", 30, "phase Failed")
    validated = condition(kube, ns, "Validated")
    assert (validated["status"], validated["reason"]) == ("False", "InsufficientGPUMemory"), validated
    assert kube.list("Job", ns) == []


@pytest.fixture
def namespaced_release(kubeconfig: Path, kube: Kube, tmp_path: Path,
                       operator: OperatorProcess) -> Iterator[tuple[OperatorProcess, str, str]]:  # fmt: skip
    """A second release in scope "namespaces" watching one namespace; the cluster-wide operator is paused."""
    watched = kube.namespace("t-watched")
    other = kube.namespace("t-unwatched")
    operator.stop()
    release = Release(kubeconfig, name="team", namespace="team-system",
                      values={"scope": "namespaces", "watchNamespaces[0]": watched})  # fmt: skip
    op = OperatorProcess(release, tmp_path / "team-operator")
    op.start()
    try:
        yield op, watched, other
    finally:
        op.stop()
        forbidden = op.forbidden()
        release.uninstall()
        for name in (watched, other):
            kube.delete("Namespace", None, name)
        operator.start()
        assert not forbidden, "namespaced RBAC refused the operator:\n" + "\n".join(forbidden[:5])


def test_namespaced_scope_reconciles_only_its_namespace(kube: Kube, namespaced_release: tuple[OperatorProcess,
                                                        str, str]) -> None:  # fmt: skip
    _, watched, other = namespaced_release
    for ns in (watched, other):
        kube.claim(ns, "data")
        kube.claim(ns, "models")
        kube.create(finetunejob(ns))
    running_pods(kube, watched, "sft", 1, 1)
    kube.wait_for(lambda: status(kube, watched).get("phase") == "Running", 30, "the watched job Running")
    # The Role grants nothing outside the watched namespace, and the operator does not try.
    assert kube.list("Job", other) == [] and status(kube, other) == {}


def test_helm_uninstall_leaves_nothing_undeletable(kube: Kube, kubeconfig: Path, tmp_path: Path,
                                                   operator: OperatorProcess) -> None:  # fmt: skip
    """FineTuneJobs outlive the operator: after `helm uninstall` they (and their namespace) still delete."""
    ns = kube.namespace("t-uninstall")
    kube.claim(ns, "data")
    kube.claim(ns, "models")
    kube.create(finetunejob(ns))
    running_pods(kube, ns, "sft", 1, 1)
    assert not (kube.get("FineTuneJob", ns, "sft") or {})["metadata"].get("finalizers"), "no finalizer on our objects"
    operator.stop()
    operator.release.uninstall()
    try:
        assert helm(kubeconfig, "status", operator.release.name, "-n", operator.release.namespace,
                    check=False).returncode != 0  # fmt: skip
        kube.delete("Namespace", None, ns)
        kube.wait_for(lambda: kube.get("Namespace", None, ns) is None, 60,
                      "the namespace (and its FineTuneJob) deleted without an operator")  # fmt: skip
    finally:
        operator.deployment = {}
        operator.start()  # reinstalls the chart for the rest of the module
