"""Controller configuration from the environment (the Helm chart sets these variables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..api.base import quantity_bytes
from ..plan.capacity import PlanSettings
from ..render.settings import RenderSettings


@dataclass(frozen=True)
class ControllerConfig:
    render: RenderSettings = field(default_factory=RenderSettings)
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    poll_seconds: float = 10.0
    progress_timeout_seconds: float = 2.0
    metrics_port: int | None = 8081
    liveness_port: int = 8080
    api_server: str | None = None  # tests and benchmarks point the operator at an emulator
    workers: int = 16
    plan: PlanSettings = field(default_factory=PlanSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ControllerConfig:
        namespaces = tuple(n.strip() for n in env.get("MODELFORGE_NAMESPACES", "").split(",") if n.strip())
        metrics = env.get("MODELFORGE_METRICS_PORT", "8081")
        return cls(
            render=RenderSettings.from_env(env),
            namespaces=namespaces,
            poll_seconds=float(env.get("MODELFORGE_POLL_SECONDS", "10")),
            metrics_port=int(metrics) if metrics else None,
            liveness_port=int(env.get("MODELFORGE_LIVENESS_PORT", "8080")),
            api_server=env.get("MODELFORGE_API_SERVER") or None,
            workers=int(env.get("MODELFORGE_WORKERS", "16")),
            plan=PlanSettings(
                gpu_memory_gib=quantity_bytes(env.get("MODELFORGE_GPU_MEMORY", "80Gi")) / 2**30,
                peak_tflops=float(env.get("MODELFORGE_GPU_TFLOPS", "800")),
            ),
        )
