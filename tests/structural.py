"""A checker for Kubernetes structural schemas (the rules the API server enforces on a CRD's schema).

https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema
plus our house rules: every string, list and map bounded; every field described; defaults valid.
"""

from __future__ import annotations

from typing import Any

import jsonschema

ALLOWED_KEYS = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "multipleOf",
    "format",
    "anyOf",
    "x-kubernetes-validations",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
}

# A CRD may only say `type: object` for metadata; apiVersion and kind are checked by the API machinery.
ROOT_FIELDS_OWNED_BY_KUBERNETES = {"apiVersion", "kind", "metadata"}


def structural_problems(node: dict[str, Any], path: str = "") -> list[str]:
    problems: list[str] = []
    unknown = set(node) - ALLOWED_KEYS
    if unknown:
        problems.append(f"{path}: keys not allowed in a CRD schema: {sorted(unknown)}")
    if "$ref" in node:
        problems.append(f"{path}: $ref")
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    if "anyOf" in node and (not int_or_string or node["anyOf"] != [{"type": "integer"}, {"type": "string"}]):
        problems.append(f"{path}: anyOf is only allowed as the int-or-string pattern")
    if "type" not in node and not int_or_string:
        problems.append(f"{path}: no type")
    if node.get("type") == "object":
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties both set")
        preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
        if "properties" not in node and "additionalProperties" not in node and not preserve and path:
            problems.append(f"{path}: object without properties (set x-kubernetes-preserve-unknown-fields)")
        if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
            problems.append(f"{path}: map without maxProperties")
    if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
        problems.append(f"{path}: unbounded string (no maxLength)")
    if node.get("type") == "array" and "maxItems" not in node:
        problems.append(f"{path}: unbounded array (no maxItems)")
    if path and not node.get("description") and not path.endswith("[]"):
        problems.append(f"{path}: no description")
    if "default" in node:
        plain = {k: v for k, v in node.items() if not k.startswith("x-kubernetes")}
        try:
            jsonschema.Draft4Validator(plain).validate(node["default"])
        except jsonschema.ValidationError as exc:
            problems.append(f"{path}: default {node['default']!r} is invalid: {exc.message}")
    for name, child in node.get("properties", {}).items():
        if not path and name in ROOT_FIELDS_OWNED_BY_KUBERNETES:
            continue
        problems += structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}[]")
    return problems
