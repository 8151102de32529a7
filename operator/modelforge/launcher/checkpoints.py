"""Find the newest WHOLE checkpoint in a run directory: a pod killed mid-save leaves a partial one, a full
disk or a torn copy leaves zero-byte or truncated files, and a checkpoint a resume failed on is marked bad."""

from __future__ import annotations

import contextlib
import json
import re
import struct
import zipfile
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = (
    "adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json",
    "pytorch_model.bin", "pytorch_model.bin.index.json",
)  # fmt: skip
BAD_MARKER = ".modelforge-bad"  # written into a checkpoint a resume failed on; its text says why
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the format's own limit
# Lines of a failed resume that show the checkpoint could not be loaded (see mark_bad in launcher/run.py).
LOAD_ERROR = re.compile(
    r"SafetensorError|safetensors_rust|HeaderTooLarge|MetadataIncompleteBuffer|Error while deserializing|"
    r"PytorchStreamReader|invalid load key|UnpicklingError|EOFError|BadZipFile|zipfile|"
    r"failed finding central directory|trainer_state\.json|Ran out of input"
)


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else None


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole (None when it is): an 8-byte little-endian header length, a JSON
    header, then the tensors, the last of which must end where the header says."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if size == 0:
                return f"{path.name} is empty (0 bytes)"
            if len(head) < 8:
                return f"{path.name} is truncated ({size} bytes, shorter than its header length)"
            (length,) = struct.unpack("<Q", head)
            if length > MAX_SAFETENSORS_HEADER or 8 + length > size:
                return f"{path.name} is truncated ({size} bytes, its header alone declares {8 + length})"
            header = json.loads(handle.read(length))
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror or exc})"
    except (ValueError, UnicodeDecodeError):
        return f"{path.name} has an unreadable header"
    if not isinstance(header, dict):
        return f"{path.name} has an unreadable header"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return f"{path.name} has an unreadable header (tensor {name!r} without data_offsets)"
        end = max(end, offsets[1])
    expected = 8 + length + end
    if size < expected:
        return f"{path.name} is truncated ({size} of the {expected} bytes its header declares)"
    return None


def zip_problem(path: Path) -> str | None:
    """Why a torch.save file (.bin/.pt, a zip since torch 1.6) is not whole: empty, or its central directory
    (written last, at the end) missing: a truncated file."""
    try:
        size = path.stat().st_size
        if size == 0:
            return f"{path.name} is empty (0 bytes)"
        if not zipfile.is_zipfile(path):
            return f"{path.name} is truncated or not a torch.save file ({size} bytes, no zip directory)"
        with zipfile.ZipFile(path) as archive:
            if not archive.namelist():
                return f"{path.name} is an empty archive"
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror or exc})"
    except zipfile.BadZipFile:
        return f"{path.name} is truncated ({path.stat().st_size} bytes, a broken zip directory)"
    return None


def file_problem(path: Path) -> str | None:
    if path.suffix == ".safetensors":
        return safetensors_problem(path)
    if path.suffix in (".bin", ".pt", ".pth"):
        return zip_problem(path)
    if path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return f"{path.name} does not parse as JSON"
    return None


def _index_problems(index: Path) -> list[str]:
    """A sharded model: every shard the index names must be there and whole."""
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [f"{index.name} does not parse"]
    problems = []
    for shard in shards:
        target = index.parent / str(shard)
        if not target.exists():
            problems.append(f"{shard} (named by {index.name}) is missing")
    return problems


def missing_parts(path: Path) -> list[str]:
    """What keeps a checkpoint from being resumable (empty when whole).

    transformers' Trainer writes weights, then optimizer/scheduler (or DeepSpeed's global_step*/ shards),
    then rng state, and trainer_state.json last; a readable trainer_state.json whose global_step matches
    the directory name is the commit marker. Every weight, optimizer and state file must also be whole:
    safetensors' declared sizes against the file's, torch.save zips with their directory, JSON that parses.
    """
    missing = []
    marker = path / BAD_MARKER
    if marker.exists():
        try:
            why = marker.read_text(errors="replace").strip().splitlines()[0][:300]
        except (OSError, IndexError):
            why = "no reason recorded"
        missing.append(f"marked bad by an earlier attempt: {why}")
    if not any((path / name).exists() for name in WEIGHT_FILES):
        missing.append("model weights")
    has_optimizer = (path / "optimizer.pt").exists() or any(path.glob("global_step*"))
    if not has_optimizer:
        missing.append("optimizer state")
    state_file = path / "trainer_state.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        missing.append("trainer_state.json")
    else:
        if not isinstance(state, dict) or state.get("global_step") != checkpoint_step(path):
            missing.append("trainer_state.json global_step matching the directory")
    files = [p for p in path.iterdir() if p.is_file() and p.name != "trainer_state.json"] if path.is_dir() else []
    for step_dir in path.glob("global_step*"):  # DeepSpeed's shards
        files += [p for p in step_dir.iterdir() if p.is_file()]
    for file in sorted(files):
        problem = file_problem(file)
        if problem:
            missing.append(problem)
        if file.name.endswith(".index.json") and not problem:
            missing += _index_problems(file)
    return missing


def list_checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N directories, oldest first (symlinks such as last-checkpoint and *-merged are skipped)."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and not p.is_symlink() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def newest_complete(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest whole checkpoint, and a note for each newer one that was skipped and why."""
    notes: list[str] = []
    for path in reversed(list_checkpoints(run_dir)):
        missing = missing_parts(path)
        if not missing:
            return path, notes
        notes.append(f"skipping {path.name}: not whole ({'; '.join(missing)})")
    return None, notes


def mark_bad(path: Path, reason: str) -> None:
    """Record that resuming from `path` failed: newest_complete skips it from now on."""
    # A read-only volume: the next attempt fails the same way, and maxRestarts bounds it.
    with contextlib.suppress(OSError):
        (path / BAD_MARKER).write_text(reason.strip()[:2000] + "\n")


def resume_failure(tail: list[str], checkpoint: Path) -> str | None:
    """The line that shows a resume failed while loading `checkpoint`, or None."""
    for line in reversed(tail):
        if LOAD_ERROR.search(line) or (checkpoint.name in line and "Error" in line):
            return line.strip()[:300]
    return None


def set_aside(run_dir: Path, resume_from: Path | None) -> list[str]:
    """Move every checkpoint newer than `resume_from` (none is whole, or it would be the one) to
    checkpoint-N.bad: the resumed trainer would otherwise save into those directories, mixing new files with
    the broken ones and the bad marker. Kept, not deleted, for a person to look at."""
    floor = (checkpoint_step(resume_from) or 0) if resume_from is not None else -1
    notes = []
    for path in list_checkpoints(run_dir):
        if (checkpoint_step(path) or 0) <= floor:
            continue
        target = path.with_name(path.name + ".bad")
        n = 1
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}.bad{n}")
        try:
            path.rename(target)
        except OSError as exc:
            notes.append(f"could not move {path.name} aside ({exc.strerror or exc})")
        else:
            notes.append(f"moved {path.name} aside to {target.name}: the resumed run saves a new {path.name}")
    return notes
