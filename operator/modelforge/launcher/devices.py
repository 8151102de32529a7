"""How many GPUs this process can use, without importing torch (which costs seconds)."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path

from ..plan.performance import Capabilities


def visible_gpus(env: Mapping[str, str], dev: Path = Path("/dev")) -> int:
    """The GPUs a pod was given (it sees only its allocated ones): the visibility variables when set
    (CUDA_VISIBLE_DEVICES; ROCm's HIP_/ROCR_VISIBLE_DEVICES), else the device nodes: /dev/nvidiaN for
    NVIDIA, /dev/dri/renderD* beside /dev/kfd for AMD (`resources.gpuResourceName: amd.com/gpu`, whose
    GPUs were requested but never counted before)."""
    for variable in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"):
        visible = env.get(variable)
        if visible is not None:
            return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        nvidia = sum(1 for p in dev.iterdir() if re.fullmatch(r"nvidia\d+", p.name))
        if nvidia or not (dev / "kfd").exists():
            return nvidia
        return sum(1 for p in (dev / "dri").iterdir() if p.name.startswith("renderD"))
    except OSError:
        return 0


def capabilities(device: str) -> Capabilities:
    """The optional kernels this process could use (only looked for when there is a GPU)."""
    if device != "cuda":
        return Capabilities(cuda=False)
    return Capabilities(
        cuda=True,
        liger=importlib.util.find_spec("liger_kernel") is not None,
        flash_attn=importlib.util.find_spec("flash_attn") is not None,
    )
