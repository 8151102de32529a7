"""Turn pydantic's JSON Schema into a Kubernetes structural OpenAPI v3 schema.

Structural means: every node has a type (or is a deliberate int-or-string / preserve-unknown node), no
`$ref`, no `nullable` unions, and `properties` never beside `additionalProperties`. See
https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# JSON Schema keywords that OpenAPI v3 in a CRD does not accept, or that are noise for `kubectl explain`.
_DROP = {"title", "$defs", "definitions", "propertyNames"}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The CRD schema of a pydantic model, with `$ref`s inlined and nullability removed."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return _convert(raw, defs)


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _inline(node, defs)
    node = _drop_null(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _convert(child, defs) for name, child in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "additionalProperties":
            if value is False:
                continue  # pydantic's extra=forbid; the API server prunes unknown fields instead
            out[key] = _convert(value, defs) if isinstance(value, dict) else value
        elif key == "default" and value is None:
            continue
        elif key == "anyOf" and node.get("x-kubernetes-int-or-string"):
            out[key] = [{"type": "integer"}, {"type": "string"}]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020 puts the bound in exclusive*; OpenAPI v3.0 (CRDs) uses a boolean flag.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _inline(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Replace a `$ref` by the definition it names, keeping the referrer's description and default."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target = defs[ref.split("/")[-1]]
    merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if "description" in node:
        merged["description"] = node["description"]
    return _inline(merged, defs)


def _drop_null(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """`X | None` (an optional field) becomes plain X: absence, not null, means unset in Kubernetes."""
    any_of = node.get("anyOf")
    if not any_of:
        return node
    rest = [option for option in any_of if option.get("type") != "null"]
    if len(rest) == len(any_of) or len(rest) != 1:
        return node
    inner = _inline(rest[0], defs)
    merged = {**inner, **{k: v for k, v in node.items() if k != "anyOf"}}
    return _drop_null(merged, defs)
