"""Find the newest COMPLETE checkpoint in a run directory (a pod killed mid-save leaves a partial one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = (
    "adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json",
    "pytorch_model.bin", "pytorch_model.bin.index.json",
)  # fmt: skip


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else None


def missing_parts(path: Path) -> list[str]:
    """What a checkpoint lacks to be resumable (empty when complete).

    transformers' Trainer writes weights, then optimizer/scheduler (or DeepSpeed's global_step*/ shards),
    then rng state, and trainer_state.json last; a readable trainer_state.json whose global_step matches
    the directory name is the commit marker.
    """
    missing = []
    if not any((path / name).exists() for name in WEIGHT_FILES):
        missing.append("model weights")
    has_optimizer = (path / "optimizer.pt").exists() or any(path.glob("global_step*"))
    if not has_optimizer:
        missing.append("optimizer state")
    state_file = path / "trainer_state.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, json.JSONDecodeError):
        missing.append("trainer_state.json")
    else:
        if state.get("global_step") != checkpoint_step(path):
            missing.append("trainer_state.json global_step matching the directory")
    return missing


def list_checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N directories, oldest first (symlinks such as last-checkpoint and *-merged are skipped)."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and not p.is_symlink() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def newest_complete(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest resumable checkpoint, and a note for each newer one that was skipped and why."""
    notes: list[str] = []
    for path in reversed(list_checkpoints(run_dir)):
        missing = missing_parts(path)
        if not missing:
            return path, notes
        notes.append(f"skipping {path.name}: incomplete (missing {', '.join(missing)})")
    return None, notes
