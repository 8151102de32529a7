"""What every rendered pod runs as: the Pod Security Standard `restricted` by default, for training
(Job, RayJob head and workers) and serving (engine, agent, chat-template step) alike.

`restricted` asks: runAsNonRoot (and no UID 0), allowPrivilegeEscalation false, capabilities drop ALL
(adding only NET_BIND_SERVICE), seccomp RuntimeDefault or Localhost, only ephemeral/claim/config volumes,
no host namespaces or ports. Every container's root filesystem is read-only: what a program writes goes
to the claims and emptyDirs the renderer declares, and every container gets two of those, /tmp and HOME
(HOME_DIR, the images' user's home; caches of ms-swift, matplotlib, torch, triton and vLLM land there).
ModelForge also mounts no service-account token: no pod it renders talks to
the API server (the launcher reports through its termination message and /progress, the operator reads
them). `spec.resources.security` adds what a site needs (a UID, capabilities such as IPC_LOCK for RDMA);
docs/install.md says what each costs."""

from __future__ import annotations

from typing import Any

from ..api.common import PodSecurity
from .settings import RenderSettings

HOME_DIR = "/home/modelforge"  # the home of user 10001 in ModelForge's images (images/*/Dockerfile)
USER_NAME = "modelforge"
# emptyDirs every hardened pod has, mounted into each container: (volume name, mount path)
SCRATCH = (("tmp", "/tmp"), ("home", HOME_DIR))


def pod_security_context(security: PodSecurity | None, settings: RenderSettings) -> dict[str, Any]:
    """The pod-level securityContext: a non-root UID/GID, the volumes' group, seccomp RuntimeDefault."""
    security = security or PodSecurity()
    user = security.run_as_user or settings.run_as_user
    group = security.run_as_group if security.run_as_group is not None else user
    fs_group = security.fs_group if security.fs_group is not None else group
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": group,
        "fsGroup": fs_group,
        # Not a recursive chown of the whole output/cache claim at every pod start of every gang restart.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(security: PodSecurity | None, *, main: bool) -> dict[str, Any]:
    """A container's securityContext: no escalation, every capability dropped; the main container (trainer
    or engine) gets spec.resources.security.addCapabilities back, the helpers never."""
    capabilities: dict[str, Any] = {"drop": ["ALL"]}
    if main and security and security.add_capabilities:
        capabilities["add"] = sorted(set(security.add_capabilities))
    return {"allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
            "capabilities": capabilities}  # fmt: skip


def add_scratch(pod_spec: dict[str, Any]) -> None:
    """The writable places of a pod whose root filesystem is read-only: /tmp and HOME as emptyDirs (no size
    limit: a hub model downloaded into HOME's cache is tens of GB; the node's ephemeral storage bounds them),
    and HOME/USER/LOGNAME in each container (getpass.getuser() in torch and triton needs USER where an image,
    vLLM's own, has no passwd entry for the UID)."""
    volumes = pod_spec.setdefault("volumes", [])
    names = {v["name"] for v in volumes}
    volumes += [{"name": name, "emptyDir": {}} for name, _ in SCRATCH if name not in names]
    for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        mounts = container.setdefault("volumeMounts", [])
        taken = {m["mountPath"] for m in mounts}
        mounts += [{"name": name, "mountPath": path} for name, path in SCRATCH if path not in taken]
        env = container.setdefault("env", [])
        given = {e["name"] for e in env}
        env += [{"name": k, "value": v} for k, v in (("HOME", HOME_DIR), ("USER", USER_NAME), ("LOGNAME", USER_NAME))
                if k not in given]  # fmt: skip


def harden(pod_spec: dict[str, Any], security: PodSecurity | None, settings: RenderSettings, main: str) -> None:
    """Give `pod_spec` (in place) the pod and container security contexts and no service-account token;
    `main` names the container that may get added capabilities."""
    pod_spec["automountServiceAccountToken"] = False
    add_scratch(pod_spec)
    pod_spec["securityContext"] = pod_security_context(security, settings)
    for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        container["securityContext"] = container_security_context(security, main=container["name"] == main)


def image_allowed(image: str, allowed: tuple[str, ...]) -> bool:
    """Whether `image` is on the operator's allow-list: an entry ending in "/" allows every image under it
    (a registry or an organisation), any other entry a repository at any tag or digest, or one exact image."""
    repository = image.split("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    return any(image == entry or repository == entry or (entry.endswith("/") and image.startswith(entry))
               for entry in allowed)  # fmt: skip


def image_problems(image: str | None, settings: RenderSettings, field: str = "spec.resources.image") -> list[str]:
    """`field` (an image) refused by the operator's allow-list (chart workloads.allowedImages; empty: any
    image). The operator's own images are always allowed, named or by default: the cluster admin chose them."""
    own = (settings.trainer_image, settings.vllm_image, settings.serve_swift_image, settings.agent_image)
    if image is None or not settings.allowed_images or image_allowed(image, (*settings.allowed_images, *own)):
        return []
    return [f"{field}: {image} is not allowed on this cluster (allowed: "
            f"{', '.join(settings.allowed_images)}); use one of those, or leave the field out for the "
            "operator's default image, or ask the cluster admin to add it to workloads.allowedImages"]  # fmt: skip
