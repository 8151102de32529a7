"""Peak memory of every Python process a benchmark step starts (ms-swift's trainer runs two processes down).

bench.py puts this folder first on PYTHONPATH and names a folder in MODELFORGE_BENCH_PROBE; at exit each
process writes probe-<pid>.json there: its peak RSS and, when it used CUDA, torch's peak allocated and
reserved bytes and the CUDA context (device memory in use minus what torch holds). Without the variable it
does nothing. An existing sitecustomize further down sys.path still runs (this one only shadows it).
"""

from __future__ import annotations

import atexit
import importlib.machinery
import importlib.util
import json
import os
import resource
import sys

_FOLDER = os.environ.get("MODELFORGE_BENCH_PROBE")


def _dump() -> None:
    record: dict[str, object] = {
        "pid": os.getpid(),
        "argv": sys.argv[:2],
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
    }
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            free, total = torch.cuda.mem_get_info()
            record.update(
                max_allocated_bytes=torch.cuda.max_memory_allocated(),
                max_reserved_bytes=torch.cuda.max_memory_reserved(),
                context_bytes=(total - free) - torch.cuda.memory_reserved(),
            )
    except Exception as exc:  # a probe must never change how the process ends
        record["cuda_error"] = repr(exc)
    try:
        with open(os.path.join(str(_FOLDER), f"probe-{os.getpid()}.json"), "w") as f:
            json.dump(record, f)
    except OSError:
        pass


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


if _FOLDER:
    atexit.register(_dump)
_chain()
