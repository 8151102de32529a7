"""ModelServe: an OpenAI-compatible endpoint for a hub model, a PVC path, or a FineTuneJob's output."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from .base import ApiModel, CelRule, LabelName, ResourceName, ServeExtraArgs, Str1k, Str4k, Str253
from .common import Condition, Dtype, Hub, PodResources, SecretKeyRef

MODEL_SOURCE_DESCRIPTION = (
    "Where the weights come from: a hub id (Qwen/Qwen3-8B), a path on a claim (pvc://claim/path/inside), "
    "or an absolute path in the container image."
)


class Engine(StrEnum):
    VLLM = "vllm"
    SWIFT = "swift"


class ServiceType(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class ServePhase(StrEnum):
    PENDING = "Pending"
    LOADING = "Loading"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class ServedModel(ApiModel):
    """The base model to serve: a source, or the output of a FineTuneJob in the same namespace."""

    cel_rules = (
        CelRule(
            "has(self.source) != has(self.fromFineTuneJob)",
            "set exactly one of model.source or model.fromFineTuneJob",
        ),
    )

    source: Str1k | None = Field(default=None, description=MODEL_SOURCE_DESCRIPTION)
    from_fine_tune_job: ResourceName | None = Field(
        default=None,
        description="Name of a FineTuneJob in this namespace. The serve waits until it succeeds, then serves its "
        "merged model, or its base model with the trained adapter when it was not merged.",
    )
    hub: Hub = Field(default=Hub.HUGGINGFACE, description="Hub to download `source` from when it is a hub id.")
    revision: Str253 | None = Field(default=None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(
        default=False,
        description="Let the engine run the model's own Python code (vLLM --trust-remote-code). Off unless "
        "set: only for a source you trust.",
    )


class Adapter(ApiModel):
    """A LoRA adapter served next to the base model under its own model name."""

    cel_rules = (
        CelRule(
            "has(self.source) != has(self.fromFineTuneJob)",
            "set exactly one of source or fromFineTuneJob for each adapter",
        ),
    )

    name: LabelName = Field(description="Model name clients use in the `model` field of a request.")
    source: Str1k | None = Field(default=None, description="Adapter directory: pvc://claim/path or a hub id.")
    from_fine_tune_job: ResourceName | None = Field(
        default=None,
        description="Name of a LoRA/QLoRA FineTuneJob in this namespace whose adapter is served.",
    )


class ServiceSpec(ApiModel):
    """How the endpoint is exposed."""

    type: ServiceType = Field(default=ServiceType.CLUSTER_IP, description="Kubernetes Service type.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(default=8000, description="Service port of the API.")


class ServeResources(PodResources):
    """Compute resources of each replica; GPUs per replica are tensorParallel x pipelineParallel."""

    gpus_per_replica: Annotated[int, Field(ge=0, le=64)] | None = Field(
        default=None,
        description="GPUs per replica. Defaults to tensorParallel x pipelineParallel; 0 runs on the CPU "
        "(engine swift).",
    )
    gpus_per_node: Annotated[int, Field(ge=1, le=64)] | None = Field(
        default=None,
        description="GPUs on one node of your GPU pool. When set, a replica that needs more GPUs than a node has "
        "is rejected before anything is created.",
    )


class Sampling(ApiModel):
    """Defaults for requests that do not set them (a request's own values win)."""

    temperature: Annotated[float, Field(ge=0, le=2)] | None = Field(
        default=None, description="Sampling temperature; 0 is greedy."
    )
    top_p: Annotated[float, Field(gt=0, le=1)] | None = Field(default=None, description="Nucleus sampling top-p.")
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(
        default=None,
        description="Tokens to generate when a request does not say. With vllm this is also the server-wide "
        "limit (vLLM's max_new_tokens generation config).",
    )


class ModelServeSpec(ApiModel):
    """Desired state of a ModelServe."""

    cel_rules = (
        CelRule(
            "self.engine == 'vllm' || self.tensorParallel == 1 && self.pipelineParallel == 1",
            "tensorParallel and pipelineParallel above 1 need engine vllm",
            ".engine",
        ),
        CelRule(
            "!has(self.resources.gpusPerReplica) || self.resources.gpusPerReplica > 0 || self.engine == 'swift'",
            "gpusPerReplica 0 (CPU serving) needs engine swift",
            ".resources.gpusPerReplica",
        ),
        CelRule(
            "!has(self.adapters) || self.adapters.all(a, self.adapters.exists_one(b, b.name == a.name))",
            "adapter names must be unique",
            ".adapters",
        ),
    )

    model: ServedModel = Field(description="The base model.")
    adapters: Annotated[list[Adapter], Field(max_length=32)] | None = Field(
        default=None, description="LoRA adapters served by the same engine (multi-LoRA behind one endpoint)."
    )
    engine: Engine = Field(
        default=Engine.VLLM,
        description="Inference engine: vllm (GPU, production) or swift (ms-swift's PyTorch server, for CPU and tiny "
        "models).",
    )
    tensor_parallel: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1, description="GPUs each layer is split over. Must divide the model's attention head count."
    )
    pipeline_parallel: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1, description="Pipeline stages per replica (multiplies GPUs per replica)."
    )
    replicas: Annotated[int, Field(ge=0, le=128)] = Field(default=1, description="Number of serving replicas.")
    served_model_name: Str253 | None = Field(
        default=None, description="Model name clients ask for. Defaults to the ModelServe's name."
    )
    max_model_len: Annotated[int, Field(ge=16, le=10_000_000)] | None = Field(
        default=None, description="Maximum context length (prompt + completion). Defaults to the model's own."
    )
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.9, description="Fraction of each GPU's memory the engine may use."
    )
    dtype: Dtype = Field(default=Dtype.AUTO, description="Weight and activation dtype.")
    quantization: Annotated[str, Field(max_length=64, pattern=r"^[a-z0-9_]+$")] | None = Field(
        default=None, description="vLLM --quantization method (e.g. awq, gptq, fp8, bitsandbytes)."
    )
    enable_prefix_caching: bool = Field(default=True, description="Reuse the KV cache of shared prompt prefixes.")
    max_lora_rank: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        default=None,
        description="Largest LoRA rank to serve (vLLM --max-lora-rank). Defaults to 64 with adapters.",
    )
    max_loras: Annotated[int, Field(ge=1, le=256)] | None = Field(
        default=None, description="Adapters resident on the GPU at once (vLLM --max-loras)."
    )
    sampling: Sampling | None = Field(
        default=None,
        description="Default sampling for requests (both engines: vLLM generation config, swift deploy defaults).",
    )
    system_prompt: Str4k | None = Field(
        default=None,
        description="Default system prompt, added when a request has no system message (swift: --system; vllm: "
        "the model's chat template wrapped by an init step; not for a hub model with vllm).",
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the API key clients must send as `Authorization: Bearer`.",
    )
    resources: ServeResources = Field(default_factory=ServeResources, description="Per-replica resources.")
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="How the endpoint is exposed.")
    extra_args: ServeExtraArgs | None = Field(
        default=None,
        description="Extra engine arguments, appended last, passed as an argv list (no shell). A flag carrying a "
        "credential (`--api-key`, `--hf-token`, `--*token`, `--*secret*`, ...) is refused: use `spec.apiKeySecretRef`.",
    )


class AdapterState(StrEnum):
    LOADED = "Loaded"
    LOADING = "Loading"
    FAILED = "Failed"


class AdapterStatus(ApiModel):
    """One LoRA adapter as the replicas serve it (vLLM: loaded live by each pod's serve agent)."""

    name: Str253 = Field(description="The adapter's model name (spec.adapters[].name).")
    state: AdapterState = Field(description="Loaded in every ready replica, Loading, or Failed (see message).")
    message: Str1k | None = Field(default=None, description="Why it is not loaded yet, or why it failed.")


class ModelServeStatus(ApiModel):
    """Observed state of a ModelServe."""

    phase: ServePhase | None = Field(default=None, description="Pending, Loading, Ready, Degraded or Failed.")
    conditions: Annotated[list[Condition], Field(max_length=16)] | None = Field(
        default=None, description="ModelAvailable, Ready, Degraded."
    )
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="metadata.generation last acted on."
    )
    endpoint: Str1k | None = Field(default=None, description="In-cluster base URL of the OpenAI API (…/v1).")
    ready_replicas: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Replicas passing readiness.")
    models: Annotated[list[Str253], Field(max_length=64)] | None = Field(
        default=None, description="Model names the engine reports on /v1/models."
    )
    model_path: Str1k | None = Field(default=None, description="The resolved base model the engine loads.")
    adapters: Annotated[list[AdapterStatus], Field(max_length=64)] | None = Field(
        default=None, description="Each adapter of spec.adapters and its state in the running replicas."
    )
