"""Attempt N of a FineTuneJob as Kubernetes objects: a ConfigMap, a headless Service, an Indexed Job.

Pure: everything comes in as arguments (no environment, no API calls). The controller applies the
result; `modelforge render` prints it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from ..api.base import API_VERSION
from ..api.common import Hub
from ..api.conditions import EXIT_RETRYABLE
from ..api.evaluation import JUDGE_API_KEY_ENV
from ..api.finetunejob import FineTuneJobSpec, Runtime
from ..paths import CACHE_ROOT, CONFIGMAP_ROOT, JOB_CONFIG, OUTPUT_ROOT, PVC_ROOT, TRUST_REMOTE_CODE_ENV, split_uri
from ..plan.outputs import output_root_uri
from .names import attempt_name, label_value
from .security import harden
from .settings import RenderSettings

MANAGED_BY = "modelforge-operator"


@dataclass(frozen=True)
class Owner:
    """The FineTuneJob (or ModelServe) that owns the rendered children."""

    kind: str
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def job_labels(owner: Owner, attempt: int) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelforge-trainer",
        "app.kubernetes.io/instance": label_value(owner.name),
        "app.kubernetes.io/component": "training",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "modelforge.io/job": label_value(owner.name),
        "modelforge.io/attempt": str(attempt),
    }


def _meta(name: str, owner: Owner, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": owner.namespace, "labels": labels, "ownerReferences": [owner.reference()]}


def output_uri(owner: Owner, spec: FineTuneJobSpec) -> str | None:
    return output_root_uri(owner.name, spec)


def render_config_map(owner: Owner, spec: FineTuneJobSpec, attempt: int) -> dict[str, Any]:
    """The resolved spec the launcher reads from /etc/modelforge/job.json."""
    payload = {"name": owner.name, "namespace": owner.namespace, "attempt": attempt, "spec": spec.to_wire()}
    uri = output_uri(owner, spec)
    if uri:
        payload["outputUri"] = uri
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(attempt_name(owner.name, attempt), owner, job_labels(owner, attempt)),
        "data": {"job.json": json.dumps(payload, indent=2, sort_keys=True)},
    }


def render_service(owner: Owner, spec: FineTuneJobSpec, attempt: int, settings: RenderSettings) -> dict[str, Any]:
    """Headless Service: gives pod `<job>-0` the DNS name `<job>-0.<svc>.<ns>.svc` used as MASTER_ADDR."""
    labels = job_labels(owner, attempt)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(attempt_name(owner.name, attempt), owner, labels),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # ranks must resolve rank 0 before anything is "ready"
            "selector": {"modelforge.io/job": labels["modelforge.io/job"], "modelforge.io/attempt": str(attempt)},
            "ports": [
                {"name": "rendezvous", "port": spec.distributed.master_port, "protocol": "TCP"},
                {"name": "progress", "port": settings.progress_port, "protocol": "TCP"},
            ],
        },
    }


def _shm_size(spec: FineTuneJobSpec) -> str:
    if spec.resources.shared_memory is not None:
        return str(spec.resources.shared_memory)
    return f"{max(2, 4 * spec.resources.gpus_per_node)}Gi"


def _volume_name(kind: str, name: str) -> str:
    return label_value(f"{kind}-{name}".replace(".", "-"))


def _source_volumes(spec: FineTuneJobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read-only volumes for pvc:// and configMap:// sources of the model, the datasets (training, validation,
    evaluation) and the media root."""
    sources = [spec.model.source, *(d.source for d in spec.datasets)]
    if spec.validation and spec.validation.datasets:
        sources += [d.source for d in spec.validation.datasets]
    if spec.multimodal and spec.multimodal.media_root:
        sources.append(spec.multimodal.media_root)
    if spec.evaluation:
        sources += [d.source for d in spec.evaluation.datasets]
    volumes: dict[str, dict[str, Any]] = {}
    mounts: dict[str, dict[str, Any]] = {}
    for source in sources:
        split = split_uri(source)
        if split is None:
            continue
        scheme, name, _ = split
        if scheme == "pvc":
            volume = _volume_name("pvc", name)
            volumes[volume] = {"name": volume, "persistentVolumeClaim": {"claimName": name, "readOnly": True}}
            mounts[volume] = {"name": volume, "mountPath": f"{PVC_ROOT}/{name}", "readOnly": True}
        else:
            volume = _volume_name("cm", name)
            volumes[volume] = {"name": volume, "configMap": {"name": name}}
            mounts[volume] = {"name": volume, "mountPath": f"{CONFIGMAP_ROOT}/{name}", "readOnly": True}
    return list(volumes.values()), list(mounts.values())


def _env(owner: Owner, spec: FineTuneJobSpec, attempt: int, settings: RenderSettings) -> list[dict[str, Any]]:
    service = attempt_name(owner.name, attempt)
    env: list[dict[str, Any]] = [
        {"name": "MODELFORGE_NNODES", "value": str(spec.resources.nodes)},
        {"name": "NPROC_PER_NODE", "value": str(spec.resources.gpus_per_node)},
        {"name": "MASTER_ADDR", "value": f"{service}-0.{service}.{owner.namespace}.svc"},
        {"name": "MASTER_PORT", "value": str(spec.distributed.master_port)},
        {"name": "MODELFORGE_PROGRESS_PORT", "value": str(settings.progress_port)},
        # the launcher's checkpoint save on SIGTERM fits the pod's terminationGracePeriodSeconds
        {"name": "MODELFORGE_SAVE_GRACE_SECONDS", "value": str(settings.save_grace_seconds)},
        {"name": "MODELFORGE_OUTPUT_ROOT", "value": OUTPUT_ROOT},
        {"name": "USE_HF", "value": "1" if spec.model.hub == Hub.HUGGINGFACE else "0"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        # ms-swift runs a model's own code only with spec.model.trustRemoteCode (launcher/remote_code.py)
        {"name": TRUST_REMOTE_CODE_ENV, "value": "1" if spec.model.trust_remote_code else "0"},
    ]
    if spec.cache is not None:
        env += [
            {"name": "HF_HOME", "value": f"{CACHE_ROOT}/huggingface"},
            {"name": "MODELSCOPE_CACHE", "value": f"{CACHE_ROOT}/modelscope"},
        ]
    if spec.secrets and spec.secrets.hub_token:
        ref = {"secretKeyRef": {"name": spec.secrets.hub_token.name, "key": spec.secrets.hub_token.key}}
        env += [{"name": "HF_TOKEN", "valueFrom": ref}, {"name": "MODELSCOPE_API_TOKEN", "valueFrom": ref}]
    judge = spec.evaluation.judge if spec.evaluation else None
    if judge is not None and judge.api_key_secret_ref is not None:
        key = {"secretKeyRef": {"name": judge.api_key_secret_ref.name, "key": judge.api_key_secret_ref.key}}
        env.append({"name": JUDGE_API_KEY_ENV, "valueFrom": key})
    return env


def _resources(spec: FineTuneJobSpec) -> dict[str, Any]:
    gpus = str(spec.resources.gpus_per_node)
    limits: dict[str, str] = {spec.resources.gpu_resource_name: gpus}
    requests: dict[str, str] = {spec.resources.gpu_resource_name: gpus}
    for key, value in (("cpu", spec.resources.cpu), ("memory", spec.resources.memory)):
        if value is not None:
            requests[key] = limits[key] = str(value)
    return {"requests": requests, "limits": limits}


def pod_volumes(owner: Owner, spec: FineTuneJobSpec, attempt: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) of a training pod: the attempt's ConfigMap, /dev/shm, the output and cache claims,
    and the read-only claims and ConfigMaps that model and datasets come from."""
    name = attempt_name(owner.name, attempt)
    config_volume = {"name": "job-config", "configMap": {"name": name}}
    volumes: list[dict[str, Any]] = [
        config_volume,
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": _shm_size(spec)}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "job-config", "mountPath": JOB_CONFIG.rsplit("/", 1)[0], "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    if spec.output is not None:
        volumes.append({"name": "output", "persistentVolumeClaim": {"claimName": spec.output.claim_name}})
        mounts.append({"name": "output", "mountPath": OUTPUT_ROOT, "subPath": spec.output.sub_path or owner.name})
    if spec.cache is not None:
        volumes.append({"name": "cache", "persistentVolumeClaim": {"claimName": spec.cache.claim_name}})
        cache_mount: dict[str, Any] = {"name": "cache", "mountPath": CACHE_ROOT}
        if spec.cache.sub_path:
            cache_mount["subPath"] = spec.cache.sub_path
        mounts.append(cache_mount)
    source_volumes, source_mounts = _source_volumes(spec)
    # A claim the pod also writes (output, cache) is one volume: the kubelet mounts a claim once per pod, so a
    # second, read-only volume of it would make the writable mount read-only too (found on kind: the output's
    # `run` directory refused with EROFS). Its source mount stays read-only, through the writable volume.
    writable = {v["persistentVolumeClaim"]["claimName"]: v["name"] for v in volumes if "persistentVolumeClaim" in v}
    for volume in source_volumes:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim in writable:
            for mount in source_mounts:
                if mount["name"] == volume["name"]:
                    mount["name"] = writable[claim]
        else:
            volumes.append(volume)
    mounts += source_mounts
    return volumes, mounts


def pod_placement(spec: FineTuneJobSpec, settings: RenderSettings) -> dict[str, Any]:
    """The pod spec fields that place and identify a training pod (selectors, priority, scheduler, account)."""
    resources = spec.resources
    placement: dict[str, Any] = {}
    for key, value in (
        ("nodeSelector", resources.node_selector),
        ("tolerations", resources.tolerations),
        ("affinity", resources.affinity),
        ("priorityClassName", resources.priority_class_name),
        ("schedulerName", spec.scheduling.scheduler_name if spec.scheduling else None),
        ("serviceAccountName", settings.trainer_service_account),
    ):
        if value:
            placement[key] = value
    return placement


def render_job(
    owner: Owner,
    spec: FineTuneJobSpec,
    attempt: int,
    settings: RenderSettings,
) -> dict[str, Any]:
    """The Indexed Job: one pod per node, all-or-nothing (backoffLimit 0; the operator restarts the gang)."""
    name = attempt_name(owner.name, attempt)
    labels = job_labels(owner, attempt)
    volumes, mounts = pod_volumes(owner, spec, attempt)

    container = {
        "name": "trainer",
        "image": spec.resources.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modelforge", "launch"],
        "env": _env(owner, spec, attempt, settings),
        "ports": [
            {"name": "rendezvous", "containerPort": spec.distributed.master_port},
            {"name": "progress", "containerPort": settings.progress_port},
        ],
        "resources": _resources(spec),
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "subdomain": name,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "containers": [container],
        "volumes": volumes,
        **pod_placement(spec, settings),
    }
    harden(pod_spec, spec.resources.security, settings, main="trainer")
    resources = spec.resources

    job_metadata = _meta(name, owner, dict(labels))
    queue = spec.scheduling.queue_name if spec.scheduling else None
    job_metadata["labels"].update(kueue_labels(spec))
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": resources.nodes,
        "parallelism": resources.nodes,
        "backoffLimit": 0,
        "podFailurePolicy": copy.deepcopy(POD_FAILURE_POLICY),
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if queue:
        job_spec["suspend"] = True  # Kueue unsuspends it on admission
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_metadata, "spec": job_spec}


# backoffLimit 0 already fails the Job at its first failed pod; these rules only name the evidence in the Job's
# Failed condition (reason PodFailurePolicy), which outlives the pod: a pod deleted by `kubectl delete` or an
# eviction is gone within seconds, its termination message (the launcher's outcome) with it, and without them
# the operator would only read "the Job has reached the specified backoff limit" (plan/lifecycle.py reads
# these messages: job_failure_cause). A disruption first: an evicted trainer also exits 75 after its save.
POD_FAILURE_POLICY = {
    "rules": [
        {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [EXIT_RETRYABLE]},
        },
    ]
}


def render_attempt(
    owner: Owner,
    spec: FineTuneJobSpec,
    attempt: int,
    settings: RenderSettings,
) -> list[dict[str, Any]]:
    """Everything attempt N needs, in creation order.

    The Job carries no activeDeadlineSeconds: spec.activeDeadlineSeconds bounds the whole FineTuneJob
    (every attempt, from status.startTime), and the lifecycle enforces it (DeadlineExceeded).
    `distributed.runtime: ray`: the ConfigMap and a KubeRay RayJob (render/rayjob.py) instead."""
    if spec.distributed.runtime == Runtime.RAY:
        from .rayjob import render_rayjob  # it builds on this module's pod parts

        return [render_config_map(owner, spec, attempt), render_rayjob(owner, spec, attempt, settings)]
    return [
        render_config_map(owner, spec, attempt),
        render_service(owner, spec, attempt, settings),
        render_job(owner, spec, attempt, settings),
    ]


def kueue_labels(spec: FineTuneJobSpec) -> dict[str, str]:
    """The labels that make an attempt (Job or RayJob) a Kueue workload: Kueue's batch/Job (or RayJob)
    integration creates its Workload, admits all of its pods at once (one pod set: parallelism x the pod's
    requests) and unsuspends it; the priority class orders admission and preemption (docs/operator.md)."""
    scheduling = spec.scheduling
    if scheduling is None or not scheduling.queue_name:
        return {}
    labels = {"kueue.x-k8s.io/queue-name": scheduling.queue_name}
    if scheduling.priority_class:
        labels["kueue.x-k8s.io/priority-class"] = scheduling.priority_class
    return labels
