"""Which pod and container `modelforge logs` reads (render/logs.py), against pods made from the rendered
templates, so a renamed container or label breaks here rather than on a user's cluster."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelforge.render.logs import ENGINE, NoLogs, log_selector, log_target
from modelforge.render.settings import RenderSettings
from modelforge.render.training import Owner, render_attempt
from tests.launcher_specs import finetunejobs

OWNER = Owner("FineTuneJob", "sft", "team-a", "8a1f0c2e-0000-4000-8000-000000000003")


def job_obj(spec_name: str, attempt: int | None = 2, phase: str = "Running") -> dict[str, Any]:
    spec = finetunejobs()[spec_name].model_dump(by_alias=True, exclude_none=True, mode="json")
    status = {"phase": phase, **({"attempt": attempt} if attempt else {})}
    return {"kind": "FineTuneJob", "metadata": {"name": "sft", "namespace": "team-a"}, "spec": spec, "status": status}


def pod_from(template: dict[str, Any], name: str, phase: str = "Running", **labels: str) -> dict[str, Any]:
    """A pod as a controller makes it from `template`."""
    meta = copy.deepcopy(template.get("metadata") or {})
    meta["name"] = name
    meta["labels"] = {**meta.get("labels", {}), **labels}
    return {"metadata": meta, "spec": copy.deepcopy(template["spec"]), "status": {"phase": phase}}


def containers(pod: dict[str, Any]) -> list[str]:
    return [c["name"] for c in pod["spec"]["containers"]]


def test_each_node_rank_reads_its_own_pod_of_the_current_attempt() -> None:
    obj = job_obj("multinode-lora-kueue")
    job = next(o for o in render_attempt(OWNER, finetunejobs()["multinode-lora-kueue"], 2, RenderSettings())
               if o["kind"] == "Job")  # fmt: skip
    template = job["spec"]["template"]
    assert log_selector(obj) == {k: template["metadata"]["labels"][k]
                                 for k in ("modelforge.io/job", "modelforge.io/attempt")}  # fmt: skip
    index = "batch.kubernetes.io/job-completion-index"
    pods = [pod_from(template, f"sft-a2-{i}-x", **{index: str(i)}) for i in (3, 0, 2, 1)]
    for rank in range(4):
        target = log_target(obj, pods, rank)
        assert target.pod == f"sft-a2-{rank}-x" and target.container in containers(pods[0]), target
        assert target.phase == "Running"
    with pytest.raises(NoLogs, match=r"has pods only for ranks 0, 1, 2, 3 \(phase Running\); no pod for rank 4"):
        log_target(obj, pods, 4)


def test_a_job_that_started_no_attempt_says_so() -> None:
    obj = job_obj("tiny-cpu", attempt=None, phase="Queued")
    assert log_selector(obj) is None
    with pytest.raises(NoLogs, match=r"started no training pod yet \(phase Queued\): `modelforge status sft`"):
        log_target(obj, [], 0)


def test_a_ray_job_reads_the_drivers_log_from_the_submitter() -> None:
    obj = job_obj("ray-lora-2x4")
    rayjob = next(o for o in render_attempt(OWNER, finetunejobs()["ray-lora-2x4"], 2, RenderSettings())
                  if o["kind"] == "RayJob")  # fmt: skip
    cluster = rayjob["spec"]["rayClusterSpec"]
    head = pod_from(cluster["headGroupSpec"]["template"], "sft-a2-head")
    worker = pod_from(cluster["workerGroupSpecs"][0]["template"], "sft-a2-worker-0")
    submitter = pod_from(rayjob["spec"]["submitterPodTemplate"], "sft-a2-submit")
    # The submitter carries the attempt's labels, so the same selector finds all three.
    for pod in (head, worker, submitter):
        assert log_selector(obj).items() <= pod["metadata"]["labels"].items(), pod["metadata"]
    target = log_target(obj, [worker, head, submitter], 0)
    assert (target.pod, target.container) == ("sft-a2-submit", containers(submitter)[0])
    before = log_target(obj, [worker, head], 0)  # KubeRay submits once the cluster is up
    assert (before.pod, before.container) == ("sft-a2-head", containers(head)[0])
    with pytest.raises(NoLogs, match="its workers print to the driver's log"):
        log_target(obj, [worker, head, submitter], 1)


def test_a_serve_reads_a_replicas_engine_oldest_first() -> None:
    obj = {"kind": "ModelServe", "metadata": {"name": "chat"}, "status": {"phase": "Ready"}}
    assert log_selector(obj) == {"modelforge.io/serve": "chat"}
    pods = [{"metadata": {"name": n, "creationTimestamp": t}, "status": {"phase": "Running"}}
            for n, t in (("chat-b", "2026-12-03T10:00:05Z"), ("chat-a", "2026-12-03T10:00:01Z"))]  # fmt: skip
    gone = {"metadata": {"name": "chat-old", "creationTimestamp": "2026-12-01T00:00:00Z",
                         "deletionTimestamp": "2026-12-03T10:00:00Z"}, "status": {"phase": "Running"}}  # fmt: skip
    assert log_target(obj, [*pods, gone], 0).pod == "chat-a"
    assert (log_target(obj, pods, 1).pod, log_target(obj, pods, 1).container) == ("chat-b", ENGINE)
    with pytest.raises(NoLogs, match=r"ModelServe chat has replicas 0..1 \(phase Ready\)"):
        log_target(obj, pods, 2)
    with pytest.raises(NoLogs, match="has no engine pods"):
        log_target(obj, [], 0)


def test_attempt_picks_a_kept_attempt_and_says_why_a_retried_one_has_no_log() -> None:
    """`modelforge logs --attempt N`: the pods of attempt N (what is kept: the current attempt, or a finally
    failed one); a retried attempt's pods were deleted, so the message points at its Restarting event."""
    obj = job_obj("tiny-cpu", attempt=3, phase="Failed")
    assert log_selector(obj, 3) == log_selector(obj) == {"modelforge.io/job": "sft", "modelforge.io/attempt": "3"}
    assert log_selector(obj, 1) == {"modelforge.io/job": "sft", "modelforge.io/attempt": "1"}
    job = next(o for o in render_attempt(OWNER, finetunejobs()["tiny-cpu"], 3, RenderSettings()) if o["kind"] == "Job")
    kept = [pod_from(job["spec"]["template"], "sft-a3-0-x", phase="Failed")]
    assert log_target(obj, kept, attempt=3).pod == "sft-a3-0-x"
    gone = (
        r"attempt 1 of FineTuneJob sft has no pods any more: an attempt that a newer one replaced .* "
        r"kubectl get events -n team-a --field-selector involvedObject.name=sft$"
    )
    with pytest.raises(NoLogs, match=gone):
        log_target(obj, [], attempt=1)
    with pytest.raises(NoLogs, match=r"FineTuneJob sft has had attempts 1..3 \(phase Failed\); there is no attempt 4"):
        log_target(obj, [], attempt=4)
    with pytest.raises(NoLogs, match=r"has had no attempt yet"):
        log_target(job_obj("tiny-cpu", attempt=None, phase="Pending"), [], attempt=1)
    serve = {"kind": "ModelServe", "metadata": {"name": "chat"}, "status": {"phase": "Ready"}}
    with pytest.raises(NoLogs, match="has replicas, not attempts"):
        log_target(serve, [], attempt=1)
