"""Operator-wide defaults the renderers need (from Helm values via environment), as a plain value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Of a training pod's terminationGracePeriodSeconds, what is kept after the checkpoint save on SIGTERM: the
# launcher's stop of what is left (SIGTERM, 10 s, SIGKILL) and its termination message.
STOP_RESERVE_SECONDS = 30


@dataclass(frozen=True)
class RenderSettings:
    trainer_image: str = "ghcr.io/modelforge/trainer:0.1.0"
    vllm_image: str = "vllm/vllm-openai:v0.32.0"
    serve_swift_image: str = "ghcr.io/modelforge/trainer-cpu:0.1.0"
    agent_image: str = "ghcr.io/modelforge/operator:0.1.0"  # the serve agent sidecar (modelforge serve-agent)
    progress_port: int = 8090
    trainer_service_account: str | None = None
    image_pull_policy: str = "IfNotPresent"
    termination_grace_seconds: int = 120  # room for a checkpoint flush after SIGTERM
    run_as_user: int = 10001  # the pods' UID unless spec.resources.security says (ModelForge's images' user)
    allowed_images: tuple[str, ...] = ()  # spec.resources.image must match one (render/security.py); empty: any

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RenderSettings:
        defaults = cls()
        return cls(
            trainer_image=env.get("MODELFORGE_TRAINER_IMAGE", defaults.trainer_image),
            vllm_image=env.get("MODELFORGE_VLLM_IMAGE", defaults.vllm_image),
            serve_swift_image=env.get("MODELFORGE_SWIFT_IMAGE", defaults.serve_swift_image),
            agent_image=env.get("MODELFORGE_AGENT_IMAGE", defaults.agent_image),
            progress_port=int(env.get("MODELFORGE_PROGRESS_PORT", defaults.progress_port)),
            trainer_service_account=env.get("MODELFORGE_TRAINER_SERVICE_ACCOUNT") or None,
            image_pull_policy=env.get("MODELFORGE_IMAGE_PULL_POLICY", defaults.image_pull_policy),
            termination_grace_seconds=int(
                env.get("MODELFORGE_TERMINATION_GRACE_SECONDS") or defaults.termination_grace_seconds
            ),
            run_as_user=int(env.get("MODELFORGE_RUN_AS_USER") or defaults.run_as_user),
            allowed_images=tuple(i.strip() for i in env.get("MODELFORGE_ALLOWED_IMAGES", "").split(",") if i.strip()),
        )

    @property
    def save_grace_seconds(self) -> int:
        """How long the launcher lets the trainer save a checkpoint after SIGTERM: the pod's grace period less
        what stopping the rest and writing the termination message take (the kubelet SIGKILLs at the end)."""
        return max(0, self.termination_grace_seconds - STOP_RESERVE_SECONDS)
