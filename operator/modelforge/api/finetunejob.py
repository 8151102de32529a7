"""FineTuneJob: fine-tune a model with ms-swift (LoRA, QLoRA or full), on one GPU or many nodes."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from .base import ApiModel, CelRule, LabelName, ResourceName, ServeName, Str1k, Str63, Str253, TrainExtraArgs
from .common import Condition, Dtype, Hub, PodResources, SecretKeyRef, VolumeLocation
from .evaluation import EvaluationSpec, EvaluationStatus
from .modelserve import ModelServeSpec, ServedModel


class Method(StrEnum):
    LORA = "lora"
    QLORA = "qlora"
    FULL = "full"


class DatasetFormat(StrEnum):
    AUTO = "auto"
    MESSAGES = "messages"
    SHAREGPT = "sharegpt"
    ALPACA = "alpaca"
    QUERY_RESPONSE = "query-response"
    TEXT = "text"


class Scheduler(StrEnum):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"
    CONSTANT_WITH_WARMUP = "constant_with_warmup"
    COSINE_WITH_RESTARTS = "cosine_with_restarts"
    POLYNOMIAL = "polynomial"


class Optimizer(StrEnum):
    ADAMW_TORCH = "adamw_torch"
    ADAMW_TORCH_FUSED = "adamw_torch_fused"
    ADAMW_8BIT = "adamw_bnb_8bit"
    PAGED_ADAMW = "paged_adamw_32bit"
    PAGED_ADAMW_8BIT = "paged_adamw_8bit"
    SGD = "sgd"


class DeepSpeed(StrEnum):
    AUTO = "auto"
    NONE = "none"
    ZERO1 = "zero1"
    ZERO2 = "zero2"
    ZERO3 = "zero3"
    ZERO2_OFFLOAD = "zero2_offload"
    ZERO3_OFFLOAD = "zero3_offload"


class Runtime(StrEnum):
    """Who starts and connects the training processes (see docs/launcher.md, "Picking a runtime")."""

    TORCHRUN = "torchrun"
    RAY = "ray"


class ResumePolicy(StrEnum):
    AUTO = "auto"
    NEVER = "never"


class Performance(StrEnum):
    AUTO = "auto"
    NONE = "none"


class QuantType(StrEnum):
    NF4 = "nf4"
    FP4 = "fp4"


class JobPhase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    STARTING = "Starting"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class ModelSpec(ApiModel):
    """The base model to fine-tune."""

    source: Str1k = Field(
        description="Hub id (Qwen/Qwen3-8B), a directory on a claim (pvc://claim/path/inside), or an absolute "
        "path inside the trainer image or, in local mode, on this machine.",
    )
    hub: Hub = Field(default=Hub.HUGGINGFACE, description="Hub to download a hub id from.")
    revision: Str253 | None = Field(default=None, description="Hub revision (branch, tag or commit).")
    model_type: Str63 | None = Field(
        default=None,
        description="ms-swift model_type (e.g. qwen3) when it cannot be inferred from the source, as for local paths.",
    )
    template: Str63 | None = Field(
        default=None,
        description="ms-swift chat template (e.g. qwen3) when it cannot be inferred from the source.",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Run the model's own Python code (config.json auto_map, modeling_*.py) when it ships "
        "some. Off: such a model is refused with this field's name; turn it on only for a source you trust "
        "(the code runs in pods that hold this job's Secrets).",
    )


class LoraSpec(ApiModel):
    """LoRA adapter shape (method lora or qlora)."""

    rank: Annotated[int, Field(ge=1, le=1024)] = Field(default=8, description="LoRA rank r.")
    alpha: Annotated[int, Field(ge=1, le=4096)] = Field(default=32, description="LoRA alpha (scale = alpha / rank).")
    dropout: Annotated[float, Field(ge=0, lt=1)] | None = Field(
        default=None,
        description="Dropout on the LoRA path. Default 0.05, or 0 under performance: auto (faster, less memory).",
    )
    target_modules: Annotated[list[Str63], Field(min_length=1, max_length=64)] = Field(
        default_factory=lambda: ["all-linear"],
        description="Module names to adapt, or all-linear for every linear layer.",
    )


class QuantizationSpec(ApiModel):
    """bitsandbytes quantization of the frozen base weights (method qlora only)."""

    bits: Annotated[int, Field(ge=4, le=8, multiple_of=4)] = Field(default=4, description="4 or 8 bits.")
    type: QuantType = Field(default=QuantType.NF4, description="4-bit data type: nf4 or fp4.")
    double_quant: bool = Field(
        default=True, description="Quantize the quantization constants too (saves ~0.4 bit/param)."
    )
    compute_dtype: Dtype = Field(default=Dtype.BFLOAT16, description="Dtype the dequantized weights are computed in.")


class DatasetSpec(ApiModel):
    """One training dataset."""

    cel_rules = (
        CelRule(
            "!self.source.contains('#')",
            "write the subsample count in `samples`, not as #N in source",
            ".source",
        ),
        CelRule(
            "!self.source.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://') || self.source.matches('^(pvc|configMap|https?)://')",
            "source must be a hub id, a path, or a pvc://, configMap://, http:// or https:// URL",
            ".source",
        ),
    )

    source: Str1k = Field(
        description="Hub dataset id (AI-ModelScope/alpaca-gpt4-data-en), pvc://claim/path/file.jsonl, "
        "configMap://name/key, an http(s) URL, or a local path (local mode).",
    )
    subset: Str253 | None = Field(default=None, description="Hub dataset subset (ms-swift `id:subset`).")
    samples: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = Field(
        default=None,
        description="Use this many rows (ms-swift `#N`: a random subsample, or repetition when N exceeds the size).",
    )
    format: DatasetFormat = Field(
        default=DatasetFormat.AUTO,
        description="Row layout. auto detects it from the columns; pre-flight checks every row against it.",
    )


class MultimodalSpec(ApiModel):
    """A vision-language (or audio) fine-tune: which parts train, how large images get, where media lives.

    In ms-swift's terms: --freeze_vit / --freeze_aligner / --freeze_llm, --max_pixels, and ROOT_IMAGE_DIR
    (what relative `images` / `videos` / `audios` paths in the dataset rows are resolved against).
    """

    cel_rules = (
        CelRule(
            "!(self.freezeVit && self.freezeAligner && self.freezeLlm)",
            "freezeVit, freezeAligner and freezeLlm all true leaves nothing to train: unfreeze at least one",
        ),
        CelRule(
            "!has(self.mediaRoot) || !self.mediaRoot.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://') || "
            "self.mediaRoot.startsWith('pvc://')",
            "mediaRoot must be a pvc://claim/folder URL or a path (local mode)",
            ".mediaRoot",
        ),
    )

    freeze_vit: bool = Field(
        default=True, description="Keep the vision (or audio) tower frozen (ms-swift --freeze_vit). LoRA skips it."
    )
    freeze_aligner: bool = Field(
        default=True, description="Keep the aligner/projector frozen (ms-swift --freeze_aligner)."
    )
    freeze_llm: bool = Field(
        default=False, description="Keep the language model frozen (ms-swift --freeze_llm): train only vision parts."
    )
    max_pixels: Annotated[int, Field(ge=3136, le=50_176_000)] | None = Field(
        default=None,
        description="Scale down images larger than this many pixels (H*W; ms-swift --max_pixels). Bounds the "
        "vision tokens per image: about max_pixels / 784 for Qwen2.5-VL. Default: no limit.",
    )
    media_root: Str1k | None = Field(
        default=None,
        description="Folder that relative media paths in the rows are resolved against: pvc://claim/folder (mounted "
        "read-only) or a path (local mode). Default: the folder of the (first) dataset file.",
    )


class ValidationSpec(ApiModel):
    """Evaluation data: separate datasets or a split of the training data."""

    cel_rules = (
        CelRule(
            "has(self.datasets) != has(self.splitRatio)",
            "set exactly one of validation.datasets or validation.splitRatio",
        ),
    )

    datasets: Annotated[list[DatasetSpec], Field(min_length=1, max_length=16)] | None = Field(
        default=None, description="Evaluation datasets."
    )
    split_ratio: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        default=None, description="Fraction of the training data held out for evaluation."
    )
    eval_steps: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Evaluate every N steps. Defaults to checkpointing.saveSteps."
    )


class Hyperparameters(ApiModel):
    """Training hyperparameters. Give exactly one of epochs or maxSteps."""

    cel_rules = (
        CelRule("has(self.epochs) != has(self.maxSteps)", "set exactly one of epochs or maxSteps (e.g. epochs: 1)"),
        CelRule(
            "!(has(self.gradientAccumulation) && has(self.globalBatchSize))",
            "set gradientAccumulation or globalBatchSize, not both (the planner derives one from the other)",
            ".globalBatchSize",
        ),
        CelRule(
            "!has(self.warmupRatio) || !has(self.warmupSteps)",
            "set warmupRatio or warmupSteps, not both",
            ".warmupSteps",
        ),
    )

    epochs: Annotated[float, Field(gt=0, le=1000)] | None = Field(default=None, description="Passes over the data.")
    max_steps: Annotated[int, Field(ge=1, le=100_000_000)] | None = Field(
        default=None, description="Optimizer steps to run (instead of epochs)."
    )
    learning_rate: Annotated[float, Field(gt=0, le=1)] = Field(default=1e-4, description="Peak learning rate.")
    batch_size_per_device: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=1, description="Micro-batch size on each GPU."
    )
    gradient_accumulation: Annotated[int, Field(ge=1, le=4096)] | None = Field(
        default=None,
        description="Micro-batches per optimizer step. Default 1, or derived from globalBatchSize.",
    )
    global_batch_size: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(
        default=None,
        description="Sequences per optimizer step over all GPUs; must be a multiple of batchSizePerDevice x GPUs.",
    )
    max_length: Annotated[int, Field(ge=16, le=1_048_576)] = Field(
        default=2048,
        description="Longest sequence in tokens. Longer rows are dropped by ms-swift; pre-flight counts them.",
    )
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] | None = Field(
        default=None, description="Fraction of steps spent warming up the learning rate (default 0.05)."
    )
    warmup_steps: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Warm-up steps.")
    scheduler: Scheduler = Field(default=Scheduler.COSINE, description="Learning-rate schedule.")
    optimizer: Optimizer | None = Field(
        default=None,
        description="Optimizer. Default adamw_torch, or adamw_torch_fused on GPUs under performance: auto "
        "(paged_adamw_8bit and adamw_bnb_8bit need bitsandbytes, as in the trainer image).",
    )
    weight_decay: Annotated[float, Field(ge=0, le=10)] = Field(default=0.1, description="AdamW weight decay.")
    max_grad_norm: Annotated[float, Field(gt=0, le=1000)] = Field(default=1.0, description="Gradient clipping norm.")
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = Field(default=42, description="Random seed.")
    gradient_checkpointing: bool = Field(
        default=True,
        description="Recompute activations in the backward pass: much less memory, ~30 % slower.",
    )
    packing: bool = Field(
        default=False,
        description="Pack several short rows into one sequence of maxLength (needs flash attention).",
    )
    dtype: Dtype = Field(
        default=Dtype.AUTO,
        description="Training dtype. auto: bfloat16 on GPUs that support it, float32 on CPU.",
    )
    logging_steps: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=5, description="Log loss, learning rate and speed every N steps (what status.progress shows)."
    )


class ResourcesSpec(PodResources):
    """How many nodes and GPUs the job uses, and what each pod gets."""

    nodes: Annotated[int, Field(ge=1, le=512)] = Field(default=1, description="Training pods (one per node).")
    gpus_per_node: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1, description="GPUs per pod; one training process runs per GPU."
    )
    gpu_memory: Annotated[str, Field(max_length=16, pattern=r"^[0-9]+(\.[0-9]+)?Gi$")] | None = Field(
        default=None,
        description="Memory of one GPU (e.g. 80Gi) for the capacity plan. Defaults to the operator's setting.",
    )


class DistributedSpec(ApiModel):
    """Multi-GPU strategy."""

    cel_rules = (
        CelRule(
            "(has(self.runtime) ? self.runtime : 'torchrun') == (has(oldSelf.runtime) ? oldSelf.runtime : 'torchrun')",
            "distributed.runtime cannot change after the job is created; create a new FineTuneJob instead",
            ".runtime",
        ),
    )

    runtime: Runtime = Field(
        default=Runtime.TORCHRUN,
        description="torchrun: an Indexed Job, one pod per node, the launcher starts the ranks. ray: a KubeRay "
        "RayJob (needs KubeRay and the chart's ray.enabled), Ray Train starts one worker per GPU.",
    )
    deepspeed: DeepSpeed = Field(
        default=DeepSpeed.AUTO,
        description="DeepSpeed ZeRO preset. auto lets the planner choose the cheapest stage that fits.",
    )
    master_port: Annotated[int, Field(ge=1024, le=65535)] = Field(
        default=29500, description="Rendezvous port on rank 0."
    )
    rendezvous_timeout_seconds: Annotated[int, Field(ge=10, le=86_400)] = Field(
        default=900,
        description="How long the nodes wait for each other to join; then the attempt fails (Rendezvous, retried).",
    )
    collective_timeout_seconds: Annotated[int, Field(ge=10, le=86_400)] = Field(
        default=1800,
        description="A collective (all-reduce, NCCL or gloo) that does not complete in this time fails the attempt "
        "(retried) instead of hanging it.",
    )


class CheckpointingSpec(ApiModel):
    """Checkpoints and resume."""

    save_steps: Annotated[int, Field(ge=1, le=10_000_000)] = Field(default=500, description="Save every N steps.")
    keep_last: Annotated[int, Field(ge=1, le=1000)] = Field(default=2, description="Checkpoints kept on disk.")
    resume: ResumePolicy = Field(
        default=ResumePolicy.AUTO,
        description="auto: a restarted attempt continues from the newest complete checkpoint. never: start over.",
    )


class OutputSpec(VolumeLocation):
    """Where checkpoints, the adapter and the merged model are written."""

    merge: bool = Field(
        default=False,
        description="After LoRA/QLoRA training, merge the adapter into the base model (swift export).",
    )


class CacheSpec(VolumeLocation):
    """A claim shared by jobs for downloaded models and datasets (download once)."""


class SecretsSpec(ApiModel):
    """Credentials, always by reference to a Secret."""

    hub_token: SecretKeyRef | None = Field(
        default=None,
        description="Hub access token (HF_TOKEN / MODELSCOPE_API_TOKEN) for gated models and datasets.",
    )


class SchedulingSpec(ApiModel):
    """Queueing and scheduling."""

    cel_rules = (
        CelRule(
            "!has(self.priorityClass) || has(self.queueName)",
            "priorityClass is Kueue's WorkloadPriorityClass and needs queueName: set the LocalQueue too",
            ".priorityClass",
        ),
    )

    queue_name: LabelName | None = Field(
        default=None,
        description="Kueue LocalQueue (label kueue.x-k8s.io/queue-name on the attempt's Job). The Job is created "
        "suspended and starts when Kueue admits it, all nodes at once. If Kueue preempts it, its trainers save a "
        "checkpoint at the step reached and it waits in the queue again (phase Queued, reason Preempted); "
        "readmitted, it resumes from that checkpoint. Preemptions are counted in status.preemptions, not restarts.",
    )
    priority_class: LabelName | None = Field(
        default=None,
        description="Kueue WorkloadPriorityClass (label kueue.x-k8s.io/priority-class): a higher value is admitted "
        "first and may preempt lower ones, as the ClusterQueue's preemption policy allows.",
    )
    scheduler_name: Str253 | None = Field(default=None, description="Pod schedulerName (e.g. a gang scheduler).")


class FailurePolicy(ApiModel):
    """Automatic restarts after retryable failures (node lost, preemption, NCCL/rendezvous timeouts)."""

    max_restarts: Annotated[int, Field(ge=0, le=100)] = Field(
        default=3, description="Attempts after the first one. Each resumes from the newest checkpoint."
    )
    backoff_seconds: Annotated[int, Field(ge=0, le=86_400)] = Field(
        default=30,
        description="Delay before the first restart; doubled for each further one (capped at 1 h).",
    )
    stall_timeout_seconds: Annotated[int, Field(ge=0, le=86_400)] = Field(
        default=1800,
        description="Once training has begun, a process of the job that finishes no optimizer step for this long "
        "fails the attempt with reason Stalled (retried from the newest checkpoint). Also how long rank 0's "
        "/progress may stay silent, once it has answered, before the job gets the warning condition "
        "ProgressReported=False (counted from status.progress.readAt, plus the up to a minute, or a quarter of "
        "this timeout if shorter, that readAt may lag an unchanged report by). 0 turns both off.",
    )


class ServeTemplateSpec(ModelServeSpec):
    """A ModelServe spec whose model defaults to this job's output."""

    model: ServedModel | None = Field(  # type: ignore[assignment]
        default=None, description="Defaults to this job's merged model, or its base model plus its adapter."
    )


class ServeTemplate(ApiModel):
    """A ModelServe created automatically when the job succeeds."""

    name: ServeName | None = Field(
        default=None,
        description="Name of the ModelServe (also its Service's: a DNS-1035 label). Defaults to the job's name.",
    )
    spec: ServeTemplateSpec = Field(
        default_factory=ServeTemplateSpec,
        description="ModelServe spec; the model defaults to this job's output.",
    )


def _unchanged(field: str) -> CelRule:
    """Transition rule: an optional spec field may not be added, removed or changed after creation."""
    return CelRule(
        f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})",
        f"spec.{field} cannot change after the job is created: delete the job and apply the edited file "
        "(`modelforge plan --fix FILE` prints one with the planner's fix), or create a new FineTuneJob",
        f".{field}",
    )


class FineTuneJobSpec(ApiModel):
    """Desired state of a FineTuneJob."""

    cel_rules = (
        CelRule(
            "!has(self.quantization) || self.method == 'qlora'",
            "quantization applies only to method qlora: set method: qlora or remove quantization",
            ".quantization",
        ),
        CelRule(
            "!has(self.lora) || self.method != 'full'",
            "lora settings do not apply to method full: remove lora or use method lora/qlora",
            ".lora",
        ),
        CelRule(
            "!has(self.output) || !self.output.merge || !has(self.distributed) || !has(self.distributed.runtime) || "
            "self.distributed.runtime != 'ray'",
            "output.merge is not supported with distributed.runtime ray (the merge would run on the Ray head, which "
            "has no GPU and 8 GiB): use runtime torchrun, or merge afterwards with `swift export --merge_lora`",
            ".output.merge",
        ),
        CelRule(
            "!has(self.evaluation) || !has(self.distributed) || !has(self.distributed.runtime) || "
            "self.distributed.runtime != 'ray'",
            "evaluation is not supported with distributed.runtime ray (it would run on the Ray head, which has no "
            "GPU): use runtime torchrun, or evaluate afterwards with `modelforge eval`",
            ".evaluation",
        ),
        CelRule(
            "!has(self.output) || !self.output.merge || self.method != 'full'",
            "output.merge merges a LoRA adapter; a full fine-tune already writes the whole model",
            ".output.merge",
        ),
        CelRule(
            "self.distributed.deepspeed == 'auto' || self.distributed.deepspeed == 'none' || "
            "self.resources.nodes * self.resources.gpusPerNode > 1 || self.distributed.deepspeed.endsWith('_offload')",
            "a DeepSpeed ZeRO stage without offload needs more than one GPU; use auto, none or an _offload preset",
            ".distributed.deepspeed",
        ),
        *(
            _unchanged(f)
            for f in (
                "model",
                "method",
                "lora",
                "quantization",
                "datasets",
                "validation",
                "multimodal",
                "evaluation",
                "hyperparameters",
                "output",
            )
        ),
    )

    model: ModelSpec = Field(description="The base model.")
    method: Method = Field(default=Method.LORA, description="lora, qlora (4/8-bit base + LoRA) or full.")
    lora: LoraSpec | None = Field(default=None, description="LoRA shape; defaults apply when omitted.")
    quantization: QuantizationSpec | None = Field(
        default=None,
        description="Base-weight quantization for qlora; defaults (nf4, double quant) apply when omitted.",
    )
    datasets: Annotated[list[DatasetSpec], Field(min_length=1, max_length=32)] = Field(
        description="Training datasets, mixed in order."
    )
    validation: ValidationSpec | None = Field(default=None, description="Evaluation data.")
    multimodal: MultimodalSpec | None = Field(
        default=None,
        description="Vision-language fine-tunes: frozen parts, image size limit, media root. Rows name their media "
        "in images/videos/audios; pre-flight decodes every local file.",
    )
    hyperparameters: Hyperparameters = Field(description="Training hyperparameters.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Nodes, GPUs and pod resources.")
    distributed: DistributedSpec = Field(default_factory=DistributedSpec, description="DeepSpeed strategy.")
    performance: Performance = Field(
        default=Performance.AUTO,
        description="auto: enable speed-ups known to be safe for the method and hardware (recorded in status). "
        "none: run ms-swift's defaults.",
    )
    checkpointing: CheckpointingSpec = Field(default_factory=CheckpointingSpec, description="Checkpoints and resume.")
    output: OutputSpec | None = Field(
        default=None,
        description="Claim for checkpoints and results. Required on a cluster; local mode uses a directory.",
    )
    cache: CacheSpec | None = Field(default=None, description="Claim for the shared model and dataset cache.")
    secrets: SecretsSpec | None = Field(default=None, description="Credentials by Secret reference.")
    scheduling: SchedulingSpec | None = Field(default=None, description="Kueue queue and scheduler.")
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy, description="Automatic restarts.")
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Fail the job when it has run this long in total, restarts included."
    )
    suspend: bool = Field(
        default=False,
        description="true stops the running attempt (outputs and checkpoints are kept); false resumes from the "
        "newest checkpoint.",
    )
    evaluation: EvaluationSpec | None = Field(
        default=None,
        description="After training, answer held-out questions with the tuned and the base model, score both, and "
        "promote the output to spec.serve (and fromFineTuneJob) only when the gate passes.",
    )
    serve: ServeTemplate | None = Field(
        default=None,
        description="Serve the result automatically on success (once its evaluation, if any, passed its gate).",
    )
    extra_args: TrainExtraArgs | None = Field(
        default=None,
        description="Extra `swift sft` arguments, appended last, passed as an argv list (no shell). A flag carrying a "
        "credential (`--hub_token`, `--*token`, `--*secret*`, `--*password*`, `--api_key`, ...) is refused: use "
        "`spec.secrets.hubToken`.",
    )


LOSS_HISTORY_POINTS = 32  # status.progress.lossHistory: the loss curve downsampled to at most this many points


class Progress(ApiModel):
    """Training progress reported by the rank-0 launcher."""

    step: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Optimizer steps done.")
    total_steps: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Optimizer steps in the run.")
    percent: Annotated[float, Field(ge=0, le=100)] | None = Field(default=None, description="step / totalSteps.")
    summary: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="Short form for kubectl get, e.g. 120/400 (30%)."
    )
    epoch: Annotated[float, Field(ge=0)] | None = Field(default=None, description="Fractional epoch.")
    loss: float | None = Field(default=None, description="Latest training loss.")
    eval_loss: float | None = Field(default=None, description="Latest evaluation loss.")
    loss_history: Annotated[list[float], Field(max_length=LOSS_HISTORY_POINTS)] | None = Field(
        default=None,
        description="Training loss over the run, downsampled to at most 32 points (oldest first), for the "
        "sparkline in `modelforge status`.",
    )
    learning_rate: float | None = Field(default=None, description="Current learning rate.")
    tokens_per_second: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Training throughput over all GPUs."
    )
    eta: Annotated[str, Field(max_length=64)] | None = Field(default=None, description="Estimated time remaining.")
    resumed_from: Str1k | None = Field(
        default=None, description="The checkpoint this attempt's trainer resumed from (none: it started afresh)."
    )
    updated_at: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="When the launcher last updated it (its clock)."
    )
    read_at: Annotated[str, Field(max_length=64)] | None = Field(
        default=None,
        description="When the operator last read it from rank 0's /progress (the operator's clock); while the "
        "report is unchanged, refreshed once a minute (or every quarter of failurePolicy.stallTimeoutSeconds, "
        "whichever is shorter).",
    )


class PlanStatus(ApiModel):
    """The capacity plan computed before any GPU was requested."""

    fits: bool | None = Field(default=None, description="Whether the job fits the GPUs it asks for.")
    gpu_memory_gi_b_per_gpu: Annotated[float, Field(ge=0)] | None = Field(
        default=None, alias="gpuMemoryGiBPerGpu", description="Estimated peak memory per GPU, GiB."
    )
    host_memory_gi_b_per_node: Annotated[float, Field(ge=0)] | None = Field(
        default=None, alias="hostMemoryGiBPerNode", description="Estimated host RAM per node, GiB."
    )
    deepspeed: DeepSpeed | None = Field(default=None, description="The DeepSpeed preset chosen.")
    verdict: Str1k | None = Field(
        default=None, description="Fits or not, and why: the estimate for each DeepSpeed preset considered."
    )
    tokens: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Tokens to train (an upper bound when the data is not read yet)."
    )
    estimated_duration: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="Estimated training time from tokens and an assumed MFU (see notes)."
    )
    gradient_accumulation: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Resolved gradient accumulation."
    )
    performance: Annotated[list[Str253], Field(max_length=32)] | None = Field(
        default=None, description="Speed-up switches applied (performance: auto)."
    )
    notes: Annotated[list[Str1k], Field(max_length=32)] | None = Field(
        default=None, description="Why, and what would change the verdict."
    )


class Outputs(ApiModel):
    """What the job produced (paths as pvc://claim/path)."""

    output_dir: Str1k | None = Field(default=None, description="The run directory with checkpoints and logs.")
    adapter: Str1k | None = Field(default=None, description="The trained LoRA adapter (last checkpoint).")
    merged_model: Str1k | None = Field(default=None, description="The adapter merged into the base model.")
    model: Str1k | None = Field(default=None, description="The full fine-tuned model (method full).")
    loss_plot: Str1k | None = Field(
        default=None, description="The loss curve (train/eval loss and learning rate over steps) as a PNG."
    )


class FineTuneJobStatus(ApiModel):
    """Observed state of a FineTuneJob."""

    phase: JobPhase | None = Field(
        default=None,
        description="Pending, Queued, Starting, Running, Restarting, Succeeded, Failed or Suspended.",
    )
    conditions: Annotated[list[Condition], Field(max_length=16)] | None = Field(
        default=None,
        description="Validated, Admitted, Running, Succeeded, Failed, Suspended, Promoted (with spec.evaluation).",
    )
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="metadata.generation last acted on."
    )
    gpus: Annotated[int, Field(ge=0)] | None = Field(default=None, description="GPUs requested: nodes x gpusPerNode.")
    attempt: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Current attempt (1 = first).")
    attempt_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="metadata.generation the current attempt was started from."
    )
    restarts: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Automatic restarts so far.")
    preemptions: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="Times Kueue preempted the job (each resumed from its newest checkpoint; not restarts).",
    )
    next_attempt_time: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="When the next attempt starts (phase Restarting, exponential backoff)."
    )
    progress: Progress | None = Field(default=None, description="Training progress.")
    plan: PlanStatus | None = Field(default=None, description="Capacity plan.")
    latest_checkpoint: Str1k | None = Field(default=None, description="Newest complete checkpoint.")
    outputs: Outputs | None = Field(default=None, description="Results.")
    evaluation: EvaluationStatus | None = Field(
        default=None, description="The evaluation's scores (base, tuned, delta) and the gate's verdict."
    )
    serve_name: ResourceName | None = Field(default=None, description="ModelServe created from spec.serve.")
    start_time: Annotated[str, Field(max_length=64)] | None = Field(default=None, description="First attempt start.")
    completion_time: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="When the job succeeded or failed."
    )
