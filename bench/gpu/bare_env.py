"""A virtualenv that holds only what the lent GPU machine has, for the CPU rehearsal of bench/gpu/run.sh.

    .venv/bin/python bench/gpu/bare_env.py DIR

Why this way (the cheapest environment that really proves the carried wheel set is complete):
- `python -S`/`-I` with a filtered sys.path would hold for the first process only: `modelforge run` starts
  ms-swift as `sys.executable -m swift.cli.main sft`, which would see the whole .venv again.
- A fresh venv with torch, transformers, peft, ... installed from PyPI would download ~1 GB and take minutes.
- So: a venv without pip (instant) whose site-packages has a symbolic link to each top-level module of every
  .venv distribution that bench/gpu/device-packages.txt lists, and nothing else. Its python is
  sys.executable for every child process too, so ms-swift, its workers and pip all see exactly the
  device's packages plus the carried wheels on PYTHONPATH; anything else fails to import as it would there.
What it cannot mimic: the versions (here torch 2.13 CPU and transformers 5.19 from .venv; there torch 2.11
CUDA 13 and transformers 5.17) and Python 3.11 instead of 3.12 (wheels.sh --local fetches the same set for it).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import shutil
import sys
import sysconfig
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def device_packages(path: Path = HERE / "device-packages.txt") -> set[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return {canonical(line) for line in lines if line and not line.startswith("#")}


def build(target: Path) -> dict[str, list[str]]:
    """Create the venv at `target` (replacing it); returns the distributions exposed and hidden."""
    source = Path(sysconfig.get_paths()["purelib"])
    if target.exists():
        shutil.rmtree(target)
    venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
    python = target / "bin" / "python"
    site = Path(
        next(p for p in (target / "lib").glob("python*/site-packages"))  # venv's layout: lib/pythonX.Y/site-packages
    )
    wanted = device_packages()
    exposed, hidden = [], []
    for dist in importlib.metadata.distributions(path=[str(source)]):
        name = canonical(dist.metadata["Name"])
        if name not in wanted:
            hidden.append(name)
            continue
        exposed.append(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        tops.add(Path(dist._path).name)  # type: ignore[attr-defined]  # the .dist-info directory itself
        for top in sorted(tops):
            link, real = site / top, source / top
            if real.exists() and not link.exists() and top != "__pycache__":
                link.symlink_to(real)
    report = {"python": str(python), "exposed": sorted(exposed), "hidden": sorted(hidden)}
    (target / "bare-env.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    report = build(args.target.resolve())
    print(f"bare environment {args.target}: {len(report['exposed'])} of the device's packages linked from "
          f"{sys.prefix}; hidden (must be carried if needed): {', '.join(report['hidden'])}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
