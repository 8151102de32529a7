"""Where things live inside a training or serving pod. Shared by render (which mounts) and launcher (which reads).

`pvc://claim/dir/file` -> /mnt/pvc/claim/dir/file, `configMap://name/key` -> /mnt/configmaps/name/key.
"""

from __future__ import annotations

from urllib.parse import urlsplit

JOB_CONFIG = "/etc/modelforge/job.json"
OUTPUT_ROOT = "/mnt/output"
CACHE_ROOT = "/mnt/cache"
PVC_ROOT = "/mnt/pvc"
CONFIGMAP_ROOT = "/mnt/configmaps"
RUN_DIR = "run"  # ms-swift's output_dir under the output root (fixed, so a restart finds its checkpoints)
# "1" lets ms-swift run a model's own code (spec.model.trustRemoteCode); rendered into pods, read by
# launcher/remote_code.py
TRUST_REMOTE_CODE_ENV = "MODELFORGE_TRUST_REMOTE_CODE"


def split_uri(source: str) -> tuple[str, str, str] | None:
    """('pvc'|'configMap', name, path) for a volume URI, None for paths and hub ids."""
    for scheme in ("pvc", "configMap"):
        prefix = f"{scheme}://"
        if source.startswith(prefix):
            parts = urlsplit(source)
            return scheme, parts.netloc, parts.path.lstrip("/")
    return None


def pod_path(source: str) -> str:
    """The path inside the pod for a pvc:// or configMap:// source; other sources are returned unchanged."""
    split = split_uri(source)
    if split is None:
        return source
    scheme, name, path = split
    root = PVC_ROOT if scheme == "pvc" else CONFIGMAP_ROOT
    return f"{root}/{name}/{path}".rstrip("/")
