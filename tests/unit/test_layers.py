"""The layers are a contract: api <- plan <- render <- launcher / controller / cli (`make lint` runs this).

A module may import from its own layer and the layers below it, never from one above. `paths` and
`specfile` are shared leaves below api's users; `testing` builds tiny models for tests and the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "modelforge"
# Each layer and what it may import from the package.
ALLOWED = {
    "api": {"api"},
    "paths": {"paths"},
    "plan": {"api", "plan", "paths"},
    "render": {"api", "plan", "render", "paths"},
    "launcher": {"api", "plan", "launcher", "paths", "specfile"},
    "controller": {"api", "plan", "render", "controller", "paths"},
}


def layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_layers(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    package_parts = path.relative_to(PACKAGE).parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package_parts[: len(package_parts) - (node.level - 1)]
                target = (*base, *(node.module or "").split(".")) if node.module else base
                if not target:  # `from . import x` at the top level
                    target = tuple((node.names[0].name,))
                found.add((target[0], node.lineno))
            elif node.module and node.module.startswith("modelforge."):
                found.add((node.module.split(".")[1], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("modelforge."):
                    found.add((alias.name.split(".")[1], node.lineno))
    return found


def test_no_layer_imports_a_higher_one() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(path)
        if layer not in ALLOWED:
            continue  # cli.py, client.py, generate.py, testing.py: the top, may use everything
        for target, line in imported_layers(path):
            if target not in ALLOWED[layer] and target in {*ALLOWED, "cli", "specfile", "testing"}:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {layer} imports {target}")
    assert not violations, "layer contract broken (api <- plan <- render <- launcher/controller/cli):\n" + "\n".join(
        sorted(violations)
    )
