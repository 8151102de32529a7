"""How many GPUs this process can use, without importing torch (which costs seconds)."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path

from ..plan.performance import Capabilities


def visible_gpus(env: Mapping[str, str], dev: Path = Path("/dev")) -> int:
    """CUDA_VISIBLE_DEVICES when set, else the /dev/nvidiaN nodes (a pod sees only its allocated GPUs)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return sum(1 for p in dev.iterdir() if re.fullmatch(r"nvidia\d+", p.name))
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
