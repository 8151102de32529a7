"""Types used by both FineTuneJob and ModelServe."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from .base import ApiModel, FreeObject, LabelName, Quantity, ResourceName, Str1k, Str63, Str253, StringMap


class Hub(StrEnum):
    HUGGINGFACE = "huggingface"
    MODELSCOPE = "modelscope"


class Dtype(StrEnum):
    AUTO = "auto"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class SecretKeyRef(ApiModel):
    """A key in a Secret in the resource's namespace. The value is injected as an environment variable and
    never copied into a spec, status, event or log line."""

    name: ResourceName = Field(description="Name of the Secret in the same namespace.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        description="Key inside the Secret whose value is used."
    )


class VolumeLocation(ApiModel):
    """A directory on a PersistentVolumeClaim."""

    claim_name: ResourceName = Field(description="Name of the PersistentVolumeClaim (same namespace).")
    sub_path: Annotated[str, Field(max_length=1024, pattern=r"^[^/].*$|^$")] | None = Field(
        default=None,
        description="Directory inside the claim (relative, no leading slash). Defaults to the resource's name "
        "for outputs and to the claim root for caches.",
    )


Uid = Annotated[int, Field(ge=1, le=2147483647)]
Capability = Annotated[str, Field(max_length=32, pattern=r"^[A-Z][A-Z_]{1,31}$")]
Gid = Annotated[int, Field(ge=0, le=2147483647)]


class PodSecurity(ApiModel):
    """Who the pods run as, and what they may do. Every pod ModelForge renders meets the Pod Security
    Standard `restricted` by default: non-root, no privilege escalation, all capabilities dropped, seccomp
    RuntimeDefault, no service-account token. These fields add what a site needs, at the cost named."""

    run_as_user: Uid | None = Field(
        default=None,
        description="UID the containers run as. Defaults to the operator's (10001, the user of ModelForge's "
        "images). vLLM's official image is built for root but runs as any UID (HOME is an emptyDir); "
        "root (0) is refused: the restricted profile forbids it.",
    )
    run_as_group: Gid | None = Field(default=None, description="GID the containers run as. Defaults to runAsUser.")
    fs_group: Gid | None = Field(
        default=None,
        description="Group that owns mounted volumes (output and cache claims), so a non-root UID can write "
        "them. Defaults to runAsGroup.",
    )
    add_capabilities: Annotated[list[Capability], Field(max_length=16)] | None = Field(
        default=None,
        description="Linux capabilities added to the trainer or engine container (all others are dropped), "
        "e.g. IPC_LOCK to pin memory for InfiniBand/RDMA. Cost: anything but NET_BIND_SERVICE takes the pods "
        "out of `restricted`; IPC_LOCK and the like need a namespace whose pod-security level is `privileged`.",
    )


class PodResources(ApiModel):
    """Compute resources and placement of each pod."""

    gpu_resource_name: Str253 = Field(
        default="nvidia.com/gpu",
        description="Extended resource that counts GPUs on your nodes (e.g. nvidia.com/gpu, amd.com/gpu, "
        "or a MIG profile such as nvidia.com/mig-3g.40gb).",
    )
    cpu: Quantity | None = Field(default=None, description="CPU request and limit per pod (e.g. 16).")
    memory: Quantity | None = Field(
        default=None, description="Memory request and limit per pod (e.g. 200Gi). ZeRO offload needs a lot."
    )
    shared_memory: Quantity | None = Field(
        default=None,
        description="Size of /dev/shm (a memory-backed emptyDir) used by NCCL and data loaders. "
        "Defaults to a size derived from GPUs per pod.",
    )
    node_selector: StringMap | None = Field(default=None, description="Pod nodeSelector, e.g. a GPU product label.")
    tolerations: Annotated[list[FreeObject], Field(max_length=32)] | None = Field(
        default=None, description="Pod tolerations (Kubernetes core/v1 Toleration objects)."
    )
    affinity: FreeObject | None = Field(default=None, description="Pod affinity (Kubernetes core/v1 Affinity).")
    priority_class_name: ResourceName | None = Field(default=None, description="PriorityClass of the pods.")
    image: Str1k | None = Field(
        default=None,
        description="Container image override. Defaults to the image configured in the operator.",
    )
    security: PodSecurity | None = Field(
        default=None,
        description="Who the pods run as and what they may add (defaults meet the Pod Security Standard `restricted`).",
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A Kubernetes-style condition: a fact with a reason a machine can match and a message a person can read."""

    type: Str63 = Field(description="Condition type, e.g. Validated, Running, Succeeded, Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(max_length=128)] = Field(default="", description="CamelCase reason.")
    message: Annotated[str, Field(max_length=4096)] = Field(default="", description="What happened, for a person.")
    last_transition_time: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="metadata.generation this condition was computed from."
    )


class ObjectMeta(ApiModel):
    """The subset of metadata that a spec file carries."""

    model_config = ApiModel.model_config | {"extra": "allow"}

    name: ResourceName = Field(description="Name of the resource.")
    namespace: LabelName | None = Field(default=None, description="Namespace of the resource.")
    labels: StringMap | None = Field(default=None, description="Labels.")
    annotations: StringMap | None = Field(default=None, description="Annotations.")
