"""How many GPUs this process can use, without importing torch (which costs seconds)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path


def visible_gpus(env: Mapping[str, str], dev: Path = Path("/dev")) -> int:
    """CUDA_VISIBLE_DEVICES when set, else the /dev/nvidiaN nodes (a pod sees only its allocated GPUs)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return sum(1 for p in dev.iterdir() if re.fullmatch(r"nvidia\d+", p.name))
    except OSError:
        return 0
