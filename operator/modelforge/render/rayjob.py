"""Attempt N of a `distributed.runtime: ray` FineTuneJob as a KubeRay RayJob (ray.io/v1).

KubeRay creates a Ray cluster for the job (one head pod, `nodes` worker pods of `gpusPerNode` GPUs each),
submits the entrypoint (`modelforge launch`, on the head) and reports the job's state in the RayJob's
status. The launcher on the head is Ray's driver: pre-flight and resume as with torchrun, then Ray Train's
TorchTrainer runs one worker per GPU (launcher/ray_train.py). The outcome reaches the operator through the
RayJob's status.message: the driver's last line (launcher/entrypoint.py, OUTCOME_PREFIX).

Decisions (docs/launcher.md, "Picking a runtime"): `backoffLimit: 0` and Ray Train's max_failures 0 (the
operator restarts the gang as a new attempt, resuming from the output claim, exactly as with torchrun); the
cluster is deleted once the job finished (`shutdownAfterJobFinishes`); the head schedules no training
worker (`num-gpus: 0`) and gets a fixed CPU/memory budget (HEAD_RESOURCES); workers get the spec's
resources. Both mount the output claim: rank 0 (a worker) writes the checkpoints, the driver (the head)
reads them to resume and follows logging.jsonl to serve /progress. Pure, like render/training.py.
"""

from __future__ import annotations

from typing import Any

from ..api.base import quantity_bytes
from ..api.finetunejob import FineTuneJobSpec
from ..plan.capacity import RAY_HEAD_CPU, RAY_HEAD_MEMORY_GIB
from .names import attempt_name
from .security import harden
from .settings import RenderSettings
from .training import (
    Owner,
    _env,
    _meta,
    _resources,
    _shm_size,
    job_labels,
    kueue_labels,
    pod_placement,
    pod_volumes,
)

RAYJOB_API_VERSION = "ray.io/v1"
RAY_VERSION = "2.60.0"  # the trainer images' ray[train] (images/*/Dockerfile)
# The head runs the Ray control plane (GCS, dashboard, the job's driver), no training: a fixed budget.
HEAD_RESOURCES = {"requests": {"cpu": str(RAY_HEAD_CPU), "memory": f"{RAY_HEAD_MEMORY_GIB}Gi"},
                  "limits": {"memory": f"{RAY_HEAD_MEMORY_GIB}Gi"}}  # fmt: skip
FINISHED_TTL_SECONDS = 60  # how long KubeRay keeps a finished job's Ray cluster (its pods' logs) around
HEAD_OBJECT_STORE = str(2**30)  # the head stores nothing for training; its /dev/shm counts against its 8 GiB
NOT_FOR_RAY = ("MASTER_ADDR", "MASTER_PORT")  # torchrun's rendezvous: Ray Train has its own


def _ray_env(owner: Owner, spec: FineTuneJobSpec, attempt: int, settings: RenderSettings) -> list[dict[str, Any]]:
    env = [e for e in _env(owner, spec, attempt, settings) if e["name"] not in NOT_FOR_RAY]
    return [*env, {"name": "MODELFORGE_RAY_WORKER_DEVICE", "value": "cuda"}]


def _template(owner: Owner, spec: FineTuneJobSpec, attempt: int, settings: RenderSettings, role: str,
              resources: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    volumes, mounts = pod_volumes(owner, spec, attempt)
    container: dict[str, Any] = {
        "name": f"ray-{role}",
        "image": spec.resources.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": _ray_env(owner, spec, attempt, settings),
        "resources": resources,
        "volumeMounts": mounts,
    }
    if role == "head":
        container["ports"] = [
            {"name": "gcs-server", "containerPort": 6379},
            {"name": "dashboard", "containerPort": 8265},
            {"name": "client", "containerPort": 10001},
            {"name": "progress", "containerPort": settings.progress_port},
        ]
    pod_spec = {
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "containers": [container],
        "volumes": volumes,
        **pod_placement(spec, settings),
    }
    harden(pod_spec, spec.resources.security, settings, main=container["name"])
    labels = {**job_labels(owner, attempt), "modelforge.io/ray-node": role}
    return {"metadata": {"labels": labels}, "spec": pod_spec}


def _submitter(owner: Owner, spec: FineTuneJobSpec, attempt: int, settings: RenderSettings) -> dict[str, Any]:
    """The pod KubeRay's K8sJobMode starts to run `ray job submit` (KubeRay fills in the command and the
    dashboard address). Rendered here so that it is hardened like every other pod: KubeRay's own default
    has no securityContext, and a namespace enforcing `restricted` would refuse it. Its log is the driver's
    (`ray job submit` follows it): the attempt's labels let `modelforge logs` find it."""
    container = {
        "name": "ray-job-submitter",
        "image": spec.resources.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    }
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    harden(pod_spec, spec.resources.security, settings, main="")
    labels = {**job_labels(owner, attempt), "modelforge.io/ray-node": "submitter"}
    return {"metadata": {"labels": labels}, "spec": pod_spec}


def object_store_bytes(spec: FineTuneJobSpec) -> str:
    """Ray's object store lives in /dev/shm: sized to fit the pod's shared memory (Ray's own default, 30% of
    the pod's memory, can exceed it), with room for NCCL's buffers beside it. Training barely uses it."""
    return str(int(0.5 * quantity_bytes(_shm_size(spec))))


def render_rayjob(owner: Owner, spec: FineTuneJobSpec, attempt: int, settings: RenderSettings) -> dict[str, Any]:
    nodes = spec.resources.nodes
    store = object_store_bytes(spec)
    metadata = _meta(attempt_name(owner.name, attempt), owner, job_labels(owner, attempt))
    queue = spec.scheduling.queue_name if spec.scheduling else None
    metadata["labels"].update(kueue_labels(spec))
    job_spec: dict[str, Any] = {
        "entrypoint": "modelforge launch",
        "submissionMode": "K8sJobMode",
        "submitterPodTemplate": _submitter(owner, spec, attempt, settings),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": FINISHED_TTL_SECONDS,
        "backoffLimit": 0,
        "rayClusterSpec": {
            "rayVersion": RAY_VERSION,
            "headGroupSpec": {
                "rayStartParams": {
                    "num-gpus": "0",
                    "dashboard-host": "0.0.0.0",
                    "object-store-memory": HEAD_OBJECT_STORE,
                },
                "template": _template(owner, spec, attempt, settings, "head", HEAD_RESOURCES),
            },
            "workerGroupSpecs": [
                {
                    "groupName": "gpu",
                    "replicas": nodes,
                    "minReplicas": nodes,
                    "maxReplicas": nodes,
                    "rayStartParams": {"object-store-memory": store},
                    "template": _template(owner, spec, attempt, settings, "worker", _resources(spec)),
                }
            ],
        },
    }
    if queue:
        job_spec["suspend"] = True  # Kueue unsuspends it on admission
    return {"apiVersion": RAYJOB_API_VERSION, "kind": "RayJob", "metadata": metadata, "spec": job_spec}
