"""The `modelforge` command. Each subcommand is a thin shell over the pure layers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__

Handler = Callable[[argparse.Namespace], int]


def cmd_crds(args: argparse.Namespace) -> int:
    from .generate import drifted, write_generated

    root = Path(args.root)
    if args.check:
        stale = drifted(root)
        for path in stale:
            print(f"{path}: out of date with operator/modelforge/api; run `modelforge crds` (or `make generate`)")
        return 1 if stale else 0
    for path in write_generated(root):
        print(f"wrote {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .api.validate import validate_document
    from .specfile import SpecFileError, load_documents

    errors = 0
    for file in args.files:
        try:
            documents = load_documents(Path(file))
        except SpecFileError as exc:
            print(exc, file=sys.stderr)
            errors += 1
            continue
        if not documents:
            print(f"{file}: no YAML documents found", file=sys.stderr)
            errors += 1
        for doc in documents:
            if isinstance(doc.data, dict) and doc.data.get("apiVersion", "").split("/")[0] != "modelforge.io":
                continue  # PVCs, Secrets and other objects that travel with an example
            problems = validate_document(doc.data)
            for problem in problems:
                line = doc.line_of(problem.path)
                where = f" (line {line})" if line else ""
                print(f"{file}:{doc.index}: {problem}{where}", file=sys.stderr)
            errors += len(problems)
            if not problems:
                print(f"{file}:{doc.index}: {doc.data['kind']} {doc.data['metadata']['name']} is valid")
    if errors:
        print(f"{errors} problem(s) found", file=sys.stderr)
    return 1 if errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelforge",
        description="Fine-tune and serve LLMs on Kubernetes (FineTuneJob, ModelServe), or locally.",
    )
    parser.add_argument("--version", action="version", version=f"modelforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("crds", help="write the generated CRDs and docs/api.md (or check them with --check)")
    p.add_argument("--check", action="store_true", help="exit 1 if a generated file differs from the models")
    p.add_argument("--root", default=".", help="project root (default: current directory)")
    p.set_defaults(handler=cmd_crds)

    p = sub.add_parser("validate", help="validate FineTuneJob/ModelServe YAML files as kubectl apply would")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(handler=cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
