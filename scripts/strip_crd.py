"""Print a CRD's storage version only, as compact JSON (used by get-kuberay-crd.sh): `strip_crd.py CRD.yaml`."""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml


def strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main() -> None:
    with open(sys.argv[1]) as handle:
        crd = yaml.safe_load(handle)
    crd["spec"]["versions"] = [strip(v) for v in crd["spec"]["versions"] if v.get("storage")]
    print(json.dumps(crd, separators=(",", ":")))


if __name__ == "__main__":
    main()
