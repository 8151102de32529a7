"""`modelforge render` is what the operator creates: every example and every valid spec file is rendered,
applied to the real control plane, and the children the operator made are compared with the rendered
ones (both as the API server stores them: the rendered objects go through a server-side dry run, so
defaults are filled the same way; only what the API server assigns, such as uids, is left out).

A document render refuses (the planner says it cannot fit, a FineTuneJob it serves is missing or
refused) must get no children from the operator either, and the same reason.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelforge.api.validate import parse_resource
from modelforge.controller.config import ControllerConfig
from modelforge.plan.serving import predicted_outputs
from modelforge.render.manifests import render_resource
from modelforge.render.names import attempt_name
from modelforge.specfile import load_documents

from .kube import KINDS, ROOT, Kube
from .operator import OperatorProcess

EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
SPECS = sorted((ROOT / "tests" / "specs" / "valid").glob("*.yaml"))
GROUPS = [(f"examples/{d.name}", sorted(d.glob("*.yaml"))) for d in EXAMPLES] + [
    (f"specs/{p.stem}", [p]) for p in SPECS
]
# Set by the API server or the controllers, never by us.
SERVER_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")


def documents(files: list[Path]) -> list[dict[str, Any]]:
    return [d.data for f in files for d in load_documents(f) if isinstance(d.data, dict) and d.data.get("kind")]


def stored(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as compared: without status and what the API server assigns (uid, versions, times, the
    Job's generated selector, the Service's cluster IPs, the Deployment's revision)."""
    o = copy.deepcopy(obj)
    o.pop("status", None)
    meta = o["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "namespace"):
        meta.pop(key, None)
    (meta.get("annotations") or {}).pop("deployment.kubernetes.io/revision", None)
    if not meta.get("annotations"):
        meta.pop("annotations", None)
    template_labels = (o.get("spec", {}).get("template", {}).get("metadata") or {}).get("labels") or {}
    for labels in (meta.get("labels") or {}, template_labels):
        for key in SERVER_LABELS:
            labels.pop(key, None)
    if o["kind"] == "Job":
        o["spec"].pop("selector", None)
        o["spec"].pop("manualSelector", None)
    if o["kind"] == "Service":
        for key in ("clusterIP", "clusterIPs"):
            o["spec"].pop(key, None)
    return o


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: rendered {a!r}, operator {b!r}"]


@pytest.fixture(scope="module")
def dry_ns(kube: Kube) -> Iterator[str]:
    """Where rendered objects are dry-run created (nothing is stored), so the API server fills defaults."""
    name = kube.namespace("render-dry")
    yield name
    kube.delete("Namespace", None, name)


def as_server_stores(kube: Kube, obj: dict[str, Any], dry_ns: str) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = dry_ns
    return stored(kube.create(obj, dry_run=True))


def claims_of(children: list[dict[str, Any]]) -> set[str]:
    found = set()
    for child in children:
        pod = child.get("spec", {}).get("template", {}).get("spec", {})
        volumes = pod.get("volumes", [])
        found |= {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}
    return found


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions", []) if c["type"] == kind), {})


@pytest.mark.parametrize(("group", "files"), GROUPS, ids=[g for g, _ in GROUPS])
def test_render_equals_what_the_operator_creates(
    kube: Kube, operator: OperatorProcess, ns: str, dry_ns: str, group: str, files: list[Path]
) -> None:
    container = operator.deployment["spec"]["template"]["spec"]["containers"][0]
    config = ControllerConfig.from_env({e["name"]: str(e.get("value", "")) for e in container.get("env", [])})
    docs = documents(files)
    ours = [d for d in docs if d["apiVersion"] == "modelforge.io/v1alpha1"]
    jobs = {d["metadata"]["name"]: parse_resource(d).spec for d in ours if d["kind"] == "FineTuneJob"}
    served = {parse_resource(d).spec.model.from_fine_tune_job for d in ours if d["kind"] == "ModelServe"}
    # Objects the operator does not own (Secrets, ConfigMaps) as they are; claims Bound so pods can run.
    for doc in docs:
        theirs = doc["apiVersion"] != "modelforge.io/v1alpha1" and doc["kind"] != "PersistentVolumeClaim"
        if theirs and doc["kind"] in KINDS:
            kube.create({**doc, "metadata": {**doc["metadata"], "namespace": ns}})
    try:
        pre = [c for d in ours for c in render_resource({**d, "metadata": {**d["metadata"], "namespace": ns}},
                                                         config.render, namespace=ns, jobs=jobs,
                                                         plan_settings=config.plan)]  # fmt: skip
    except ValueError:
        pre = []
    for claim in sorted(claims_of(pre)):
        kube.claim(ns, claim)

    for doc in sorted(ours, key=lambda d: d["kind"] != "FineTuneJob"):  # jobs first: serves may wait on them
        doc = {**doc, "metadata": {**doc["metadata"], "namespace": ns}}
        name, kind = doc["metadata"]["name"], doc["kind"]
        live = kube.create(doc)
        try:
            expected = render_resource({**doc, "metadata": {**doc["metadata"], "uid": live["metadata"]["uid"]}},
                                       config.render, namespace=ns, jobs=jobs, plan_settings=config.plan)  # fmt: skip
            refusal = None
        except ValueError as exc:
            expected, refusal = [], str(exc)
        if kind == "FineTuneJob" and refusal:
            failed = kube.wait_for(lambda: condition(kube.get(kind, ns, name), "Failed") or None, 30, "Failed")  # noqa: B023
            assert failed["message"] in refusal, (failed, refusal)  # the same reason, in the same words
            assert not kube.list("Job", ns, {"modelforge.io/job": name}), "the operator created a Job render refuses"
            continue
        if kind == "ModelServe" and refusal:
            ready = kube.wait_for(lambda: condition(kube.get(kind, ns, name), "Ready") or None, 30, "Ready")  # noqa: B023
            assert ready["status"] == "False", ready
            assert kube.get("Deployment", ns, name) is None, f"{refusal} (render) but the operator made a Deployment"
            continue
        assert expected, f"{group}: {kind} {name} renders nothing"
        if kind == "FineTuneJob" and name in served:
            succeed(kube, ns, name, jobs[name])
        for want in expected:
            got = kube.wait_for(lambda: kube.get(want["kind"], ns, want["metadata"]["name"]), 60,  # noqa: B023
                                f"{want['kind']} {want['metadata']['name']} made by the operator")  # fmt: skip
            assert "modelforge" in {m["manager"] for m in got["metadata"]["managedFields"]}, got["metadata"]
            diff = differences(as_server_stores(kube, want, dry_ns), stored(got))
            assert not diff, f"{group}: {want['kind']} {want['metadata']['name']} differs:\n" + "\n".join(diff)
        if kind == "FineTuneJob":
            # Exactly what render printed, no more: attempt 1's ConfigMap, Service and Job (or RayJob).
            made = {(k, o["metadata"]["name"]) for k in ("ConfigMap", "Service", "Job", "RayJob")
                    for o in kube.list(k, ns, {"modelforge.io/job": name})}  # fmt: skip
            assert made == {(o["kind"], o["metadata"]["name"]) for o in expected}, made


def succeed(kube: Kube, ns: str, name: str, spec: Any) -> None:
    """Play the pods of attempt 1 to success, rank 0 reporting the outputs render predicted."""
    job = kube.wait_for(lambda: kube.get("Job", ns, attempt_name(name, 1)), 30, "the attempt's Job")
    count = job["spec"]["completions"]
    labels = {"modelforge.io/attempt": "1", "modelforge.io/job": name}

    def running() -> list[dict[str, Any]] | None:
        pods = [p for p in kube.list("Pod", ns, labels) if p.get("status", {}).get("phase") == "Running"]
        return pods if len(pods) == count else None

    for pod in kube.wait_for(running, 60, f"{count} running pod(s) of {name}"):
        index = pod["metadata"]["labels"].get("batch.kubernetes.io/job-completion-index")
        outcome = {"outcome": "Succeeded", "reason": "Completed", "message": "trained",
                   "outputs": predicted_outputs(name, spec)} if index == "0" else ""  # fmt: skip
        kube.finish_pod(ns, pod["metadata"]["name"], 0, message=outcome)
    kube.wait_for(lambda: (kube.get("FineTuneJob", ns, name) or {}).get("status", {}).get("phase") == "Succeeded",
                  60, f"{name} Succeeded")  # fmt: skip
