"""`distributed.runtime: ray`: the RayJob an attempt renders, checked against KubeRay's own CRD schema
(tests/data/kuberay, from the ray-operator Go module), and the lifecycle that reads its status."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from modelforge.api.conditions import OUTCOME_PREFIX
from modelforge.api.finetunejob import FineTuneJobSpec
from modelforge.api.validate import validate_document
from modelforge.plan.capacity import PlanSettings
from modelforge.plan.lifecycle import Observed, decide, timestamp
from modelforge.render.desired import desired_finetunejob
from modelforge.render.settings import RenderSettings
from modelforge.render.training import Owner, render_attempt
from tests.launcher_specs import finetunejobs

CRD = Path(__file__).resolve().parents[1] / "data" / "kuberay" / "ray.io_rayjobs.json"
K8S = "1.30"
OWNER = Owner("FineTuneJob", "ray-lora", "team-a", "8a1f0c2e-0000-4000-8000-000000000002")
NOW = datetime(2026, 12, 2, 12, 0, 0)
SPEC = finetunejobs()["ray-lora-2x4"]


def strict(schema: Any) -> Any:
    """KubeRay's openAPIV3Schema as a JSON Schema that also refuses unknown fields (the API server would
    silently drop them: a field we set that KubeRay does not know is a bug here)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    if schema.get("format") in ("int32", "int64"):
        out.pop("format")
    return out


@pytest.fixture(scope="module")
def rayjob_schema() -> dict[str, Any]:
    crd = json.loads(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # checked by the API machinery, not the schema
    return schema


def rendered(spec: FineTuneJobSpec = SPEC) -> list[dict[str, Any]]:
    return render_attempt(OWNER, spec, 1, RenderSettings())


def test_a_ray_attempt_is_a_configmap_and_a_rayjob_valid_for_kuberay(rayjob_schema: dict[str, Any]) -> None:
    children = rendered()
    assert [c["kind"] for c in children] == ["ConfigMap", "RayJob"]  # no Job, no rendezvous Service
    job = children[1]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"] == "ray-lora-a1"
    jsonschema.validate(job, rayjob_schema)
    for group in (job["spec"]["rayClusterSpec"]["headGroupSpec"], *job["spec"]["rayClusterSpec"]["workerGroupSpecs"]):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": group["template"]["spec"]}
        assert kubernetes_validate.validate(pod, K8S, strict=True) == K8S


def test_head_and_workers_are_sized_from_the_spec() -> None:
    spec = rendered()[1]["spec"]
    assert spec["entrypoint"] == "modelforge launch" and spec["backoffLimit"] == 0
    assert spec["shutdownAfterJobFinishes"] is True and spec["submissionMode"] == "K8sJobMode"
    head = spec["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"  # no training worker on the head
    assert head["rayStartParams"]["object-store-memory"] == str(2**30)
    head_container = head["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head_container["resources"]["requests"]
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 2
    worker = workers["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert worker["resources"]["requests"]["memory"] == "256Gi"
    # Ray's object store fits the pod's /dev/shm (16Gi for 4 GPUs), not 30% of its 256Gi.
    assert int(workers["rayStartParams"]["object-store-memory"]) == 8 * 2**30
    for container in (head_container, worker):
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["output"]["mountPath"] == "/mnt/output" and mounts["output"]["subPath"] == "ray-lora"
        assert mounts["job-config"]["readOnly"] is True
        env = {e["name"]: e for e in container["env"]}
        assert "MASTER_ADDR" not in env and env["MODELFORGE_NNODES"]["value"] == "2"
        # The hub token reaches both from the Secret, never as a value.
        assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub-token",
                                                                                       "key": "token"}}}  # fmt: skip


def test_a_queued_ray_job_is_suspended_for_kueue() -> None:
    spec = SPEC.model_copy(update={"scheduling": finetunejobs()["multinode-lora-kueue"].scheduling})
    job = rendered(spec)[1]
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-team-a"


def test_the_runtime_cannot_change_after_creation() -> None:
    old = {"apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "j"},
           "spec": {"model": {"source": "Qwen/Qwen3-8B"}, "datasets": [{"source": "org/data"}],
                    "hyperparameters": {"epochs": 1}, "distributed": {"runtime": "torchrun"}}}  # fmt: skip
    new = copy.deepcopy(old)
    new["spec"]["distributed"]["runtime"] = "ray"
    problems = validate_document(new, old=old)
    assert [p.path for p in problems] == ["spec.distributed.runtime"], problems
    assert "cannot change after the job is created" in problems[0].message
    assert validate_document(new) == []


# ------------------------------------------------------------------------------------------ the lifecycle

RUNNING = {"phase": "Starting", "attempt": 1, "startTime": timestamp(NOW - timedelta(minutes=5))}


def rayjob(deployment: str | None = None, state: str | None = None, reason: str | None = None,
           message: str | None = None) -> dict[str, Any]:  # fmt: skip
    status = {k: v for k, v in (("jobDeploymentStatus", deployment), ("jobStatus", state), ("reason", reason),
                                ("message", message)) if v is not None}  # fmt: skip
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "ray-lora-a1"}, "spec": {},
            "status": status}  # fmt: skip


def failed_log(outcome: dict[str, Any]) -> str:
    """A failed Ray job's message as KubeRay copies it: Ray's sentence, then the tail of the driver's log."""
    return ("Job entrypoint command failed with exit code 75, last available logs (truncated to 20,000 chars):\n"
            "(RayTrainWorker pid=812) RuntimeError: Connection closed by peer\n"
            f"{OUTCOME_PREFIX}{json.dumps(outcome)}\n")  # fmt: skip


def step(status: dict[str, Any], job: dict[str, Any], progress: dict[str, Any] | None = None) -> Any:
    return decide(SPEC, [], status, Observed(job=job, progress=progress), NOW, settings=PlanSettings())


def condition(decision: Any, kind: str) -> dict[str, Any]:
    return next(c for c in decision.wire["conditions"] if c["type"] == kind)


@pytest.mark.parametrize(
    ("deployment", "state", "said"),
    [(None, None, "KubeRay has not picked the RayJob up"), ("Initializing", None, "starting the Ray cluster"),
     ("Running", "PENDING", "being submitted")],
)  # fmt: skip
def test_pending_while_kuberay_starts_the_cluster(deployment: str | None, state: str | None, said: str) -> None:
    decision = step(RUNNING, rayjob(deployment, state))
    assert decision.wire["phase"] == "Starting" and said in condition(decision, "Running")["message"]
    assert decision.create_attempt is None and decision.delete_attempt is None


def test_running_with_the_heads_progress() -> None:
    progress = {"step": 5, "total_steps": 20, "percent": 25.0, "summary": "5/20 (25%)", "loss": 2.0}
    decision = step(RUNNING, rayjob("Running", "RUNNING"), progress)
    assert decision.wire["phase"] == "Running"
    assert decision.wire["progress"]["summary"] == "5/20 (25%)"
    assert "Ray job running" in condition(decision, "Running")["message"]


def test_succeeded_with_the_outputs_where_the_spec_put_them() -> None:
    job = rayjob("Complete", "SUCCEEDED", message="Job finished successfully.")
    desired = desired_finetunejob(OWNER, SPEC, [], RUNNING, Observed(job=job), NOW, None, PlanSettings(),
                                  RenderSettings())  # fmt: skip
    assert desired.status.to_wire()["phase"] == "Succeeded"
    assert desired.status.to_wire()["outputs"] == {"outputDir": "pvc://models/ray-lora/run",
                                                   "adapter": "pvc://models/ray-lora/run/last-checkpoint"}  # fmt: skip


def test_a_retryable_outcome_restarts_the_gang_as_a_new_rayjob() -> None:
    outcome = {"outcome": "Failed", "reason": "RankFailed", "message": "a rank died", "retryable": True,
               "last_step": 40, "last_checkpoint": "pvc://models/ray-lora/run/checkpoint-40"}  # fmt: skip
    decision = step(RUNNING, rayjob("Failed", "FAILED", "AppFailed", failed_log(outcome)))
    assert decision.wire["phase"] == "Restarting" and decision.wire["restarts"] == 1
    assert decision.delete_attempt == 1
    assert decision.wire["latestCheckpoint"] == "pvc://models/ray-lora/run/checkpoint-40"
    assert "RankFailed: a rank died" in condition(decision, "Running")["message"]


def test_a_permanent_outcome_fails_with_its_reason() -> None:
    outcome = {"outcome": "Failed", "reason": "DataError", "message": "train.jsonl:3: not JSON", "retryable": False}
    decision = step(RUNNING, rayjob("Failed", "FAILED", "AppFailed", failed_log(outcome)))
    assert decision.wire["phase"] == "Failed"
    assert condition(decision, "Failed")["reason"] == "DataError"
    assert "train.jsonl:3" in condition(decision, "Failed")["message"]


@pytest.mark.parametrize(
    ("deployment", "reason", "phase", "why"),
    [("Failed", "DeadlineExceeded", "Failed", "DeadlineExceeded"),
     ("ValidationFailed", "ValidationFailed", "Failed", "ConfigError"),
     ("Failed", "SubmissionFailed", "Restarting", None)],
)  # fmt: skip
def test_kuberays_own_failures(deployment: str, reason: str, phase: str, why: str | None) -> None:
    decision = step(RUNNING, rayjob(deployment, "FAILED" if reason != "ValidationFailed" else None, reason,
                                    "the head pod never started"))  # fmt: skip
    assert decision.wire["phase"] == phase
    if why:
        assert condition(decision, "Failed")["reason"] == why
    assert "the head pod never started" in json.dumps(decision.wire["conditions"])


def test_an_outcome_cut_off_by_truncation_is_not_guessed() -> None:
    message = failed_log({"outcome": "Failed", "reason": "DataError"})[:-20]
    decision = step(RUNNING, rayjob("Failed", "FAILED", "AppFailed", message))
    assert decision.wire["phase"] == "Restarting"  # Unknown (retryable), not a half-read DataError
    assert decision.wire["restarts"] == 1


def test_the_planner_states_rays_overhead_and_plans_the_gpus_as_for_torchrun() -> None:
    from modelforge.api.finetunejob import Runtime
    from modelforge.plan.capacity import plan
    from modelforge.plan.models import guess

    arch, _ = guess(SPEC.model.source)
    ray = plan(SPEC, arch)
    torchrun = plan(SPEC.model_copy(update={"distributed": SPEC.distributed.model_copy(
        update={"runtime": Runtime.TORCHRUN})}), arch)  # fmt: skip
    assert ray.chosen is not None and torchrun.chosen is not None
    assert ray.chosen.estimate.total == torchrun.chosen.estimate.total  # Ray adds no GPU memory
    (note,) = [n for n in ray.notes if n.startswith("runtime ray")]
    assert "head pod (2 CPU, 8 GiB, no GPU)" in note and "2 worker pod(s) x 4 GPU(s)" in note
    assert not any(n.startswith("runtime ray") for n in torchrun.notes)
