"""Evaluate a CRD schema's `x-kubernetes-validations` rules on an object, the way the API server does.

The rules are read from the generated schema, so what `modelforge validate` reports is what
`kubectl apply` will say. Transition rules (those using `oldSelf`) run only when an old object is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cel


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a document: where (a dotted field path) and what, for a person."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


_ABSENT = object()


def join_path(base: str, child: str | int) -> str:
    if isinstance(child, int):
        return f"{base}[{child}]"
    return f"{base}.{child}" if base else child


def check_rules(schema: dict[str, Any], obj: Any, path: str, old: Any = _ABSENT) -> list[Problem]:
    """Every rule violated anywhere in `obj` (children first, then this node)."""
    problems: list[Problem] = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        if props:
            for name, child_schema in props.items():
                if name in obj:
                    child_old = old.get(name, _ABSENT) if isinstance(old, dict) else _ABSENT
                    problems += check_rules(child_schema, obj[name], join_path(path, name), child_old)
        elif isinstance(schema.get("additionalProperties"), dict):
            for key, value in obj.items():
                child_old = old.get(key, _ABSENT) if isinstance(old, dict) else _ABSENT
                problems += check_rules(schema["additionalProperties"], value, join_path(path, key), child_old)
    elif isinstance(obj, list) and "items" in schema:
        # The API server correlates list items only for map/set lists; ours are atomic lists.
        for index, item in enumerate(obj):
            problems += check_rules(schema["items"], item, join_path(path, index))

    for rule in schema.get("x-kubernetes-validations", ()):
        transition = "oldSelf" in rule["rule"]
        if transition and old is _ABSENT:
            continue
        context = {"self": obj, "oldSelf": old} if transition else {"self": obj}
        where = path + rule["fieldPath"] if rule.get("fieldPath") else path
        try:
            ok = cel.evaluate(rule["rule"], context)
        except Exception as exc:  # the CEL library raises several types; all mean "rule did not hold"
            problems.append(Problem(where, f"{rule['message']} (rule could not be evaluated: {exc})"))
            continue
        if ok is not True:
            problems.append(Problem(where, rule["message"]))
    return problems
