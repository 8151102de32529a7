"""The layers are a contract: api <- plan <- render | status_view <- controller | launcher <- cli, checked by
import-linter (`lint-imports`, contracts in pyproject.toml [tool.importlinter]); `make lint` runs this file.

A module imports from its own layer and the layers below it, never from one above; siblings never import each
other; api, plan and render are pure; the leaves (paths, specfile, client, testing) import nothing of the
package. Every module of the package is placed by some contract, so a new one cannot slip past unchecked.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "modelforge"


def test_the_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False)
    report = done.stdout + done.stderr
    assert done.returncode == 0, "layer contract broken (pyproject.toml [tool.importlinter]):\n" + report
    assert "0 broken" in report, report


def test_every_module_of_the_package_is_placed_by_a_contract() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    named = set()
    for contract in contracts:
        for layer in contract.get("layers", []):
            named |= {m.strip() for m in layer.split("|")}
        named |= set(contract.get("source_modules", []))
    modules = [p for p in PACKAGE.iterdir() if p.suffix == ".py" and p.stem != "__init__"]
    packages = [p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    top = {f"modelforge.{p.stem}" for p in modules} | {f"modelforge.{p.name}" for p in packages}
    assert not top - named, f"modules no import contract places: {sorted(top - named)} (pyproject.toml)"
