"""Validate FineTuneJob / ModelServe documents: types and bounds (pydantic), then the CRD's CEL rules.

Every problem carries the dotted field path the API server would name, e.g.
`spec.hyperparameters.maxSteps`, and a message that says what to do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

from .base import API_VERSION, DNS_1035, DNS_LABEL, DNS_SUBDOMAIN, SERVE_NAME_RULES
from .cel import Problem, check_rules, join_path
from .crd import RESOURCES_BY_KIND, Resource, openapi_schema

__all__ = ["Problem", "SpecError", "parse_resource", "validate_document"]


class SpecError(ValueError):
    """A document that is not a valid FineTuneJob / ModelServe; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class Parsed:
    """A validated document: its kind, metadata and typed spec."""

    resource: Resource
    name: str
    namespace: str | None
    spec: Any
    raw: dict[str, Any]


@cache
def _schema(kind: str) -> dict[str, Any]:
    return openapi_schema(RESOURCES_BY_KIND[kind])


def _header_problems(doc: Any) -> list[Problem]:
    if not isinstance(doc, dict):
        return [Problem("", f"expected a mapping (a Kubernetes object), got {type(doc).__name__}")]
    problems = []
    if doc.get("apiVersion") != API_VERSION:
        problems.append(Problem("apiVersion", f"must be {API_VERSION}, got {doc.get('apiVersion')!r}"))
    if not isinstance(doc.get("kind"), str) or doc["kind"] not in RESOURCES_BY_KIND:
        kinds = ", ".join(RESOURCES_BY_KIND)
        problems.append(Problem("kind", f"must be one of {kinds}, got {doc.get('kind')!r}"))
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        problems.append(Problem("metadata.name", "required: give the resource a name"))
    elif len(name) > 253 or not re.match(DNS_SUBDOMAIN, name):
        problems.append(
            Problem("metadata.name", f"{name!r} is not a valid name: lowercase letters, digits, '-' and '.'")
        )
    problems += _metadata_problems(meta)
    for key in doc:
        if key not in TOP_LEVEL:
            problems.append(Problem(str(key), "unknown field: an object has apiVersion, kind, metadata and spec"))
    if "spec" not in doc:
        problems.append(Problem("spec", "required: the object has no spec"))
    elif not isinstance(doc["spec"], dict):
        problems.append(Problem("spec", "must be a mapping"))
    return problems


TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "status")  # status is ignored on create, as there
# ObjectMeta's fields: the API server refuses others (kubectl's strict field validation).
METADATA = {"name", "generateName", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation",
            "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences", "finalizers",
            "managedFields", "selfLink"}  # fmt: skip
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not re.match(DNS_SUBDOMAIN, prefix)):
        return f"the prefix {prefix!r} must be a DNS subdomain (lowercase letters, digits, '-', '.')"
    if not name or len(name) > 63 or not _LABEL_VALUE.match(name):
        return "a key is at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
    return None


def _metadata_problems(meta: Any) -> list[Problem]:
    """What the API server checks of metadata before a custom resource's schema: types, names, labels."""
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return [Problem("metadata", "must be a mapping (name, namespace, labels, annotations)")]
    problems = [Problem(f"metadata.{key}", "unknown field: metadata has name, namespace, labels, annotations, ...")
                for key in meta if key not in METADATA]  # fmt: skip
    namespace = meta.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63 or not re.match(DNS_LABEL, namespace)
    ):
        why = "at most 63 lowercase letters, digits and '-', beginning and ending with a letter or digit"
        problems.append(Problem("metadata.namespace", f"{namespace!r} is not a valid namespace name: {why}"))
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            problems.append(Problem(f"metadata.{field}", "must be a mapping of strings to strings"))
            continue
        for key, value in values.items():
            path = f"metadata.{field}.{key}"
            if not isinstance(value, str):
                problems.append(Problem(path, f'must be a string: quote it ({key}: "{json.dumps(value)}")'))
            elif field == "labels" and (len(value) > 63 or not _LABEL_VALUE.match(value)):
                problems.append(Problem(path, "a label value is at most 63 letters, digits, '-', '_' or '.', "
                                        "beginning and ending with a letter or digit"))  # fmt: skip
            if field == "labels" and (key_problem := _label_key_problem(str(key))):
                problems.append(Problem(path, key_problem))
    return problems


def _schema_path(schema: dict[str, Any], loc: tuple[str | int, ...], unknown_field: bool = False) -> str:
    """A pydantic error location as the API server's field path, dropping pydantic's union tags."""
    path, node = "spec", schema
    for part in loc:
        if isinstance(part, int) and "items" in node:
            path, node = join_path(path, part), node["items"]
        elif isinstance(part, str) and part in node.get("properties", {}):
            path, node = join_path(path, part), node["properties"][part]
        elif isinstance(part, str) and isinstance(node.get("additionalProperties"), dict):
            path, node = join_path(path, part), node["additionalProperties"]
    if unknown_field and loc and isinstance(loc[-1], str):
        path = join_path(path, loc[-1])
    return path


def _humanize(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field: check the spelling (fields are camelCase, see docs/api.md)"
    if kind == "missing":
        return "required field is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _parse_spec(model: type[BaseModel], spec: dict[str, Any], schema: dict[str, Any]) -> tuple[Any, list[Problem]]:
    """The typed spec (strict, as the API server types it), or the problems that stop it."""
    try:
        # Only camelCase names: the API server knows nothing of the Python field names.
        text = json.dumps(spec, default=str)
        return model.model_validate_json(text, strict=True, by_alias=True, by_name=False), []
    except ValidationError as exc:
        by_path: dict[str, list[str]] = {}
        for error in exc.errors():
            path = _schema_path(schema, error["loc"], unknown_field=error["type"] == "extra_forbidden")
            messages = by_path.setdefault(path, [])
            text = _humanize(error)  # type: ignore[arg-type]
            if text not in messages:
                messages.append(text)
        return None, [Problem(path, " or ".join(messages)) for path, messages in by_path.items()]


def _drop_nulls(value: Any) -> Any:
    """What the API server does first with a custom resource: a field set to null is dropped (none of our
    fields is nullable), so its default applies, or it is reported as required. Found by the differential
    test against the real kube-apiserver (`method: null` is accepted there as method lora)."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _check(doc: Any, old: dict[str, Any] | None) -> tuple[Any, list[Problem]]:
    problems = _header_problems(doc)
    if problems:
        return None, problems
    resource = RESOURCES_BY_KIND[doc["kind"]]
    spec_schema = _schema(resource.kind)["properties"]["spec"]
    spec, problems = _parse_spec(resource.spec, _drop_nulls(doc["spec"]), spec_schema)
    if problems:
        return None, sorted(problems)
    # Rules run on the defaulted object, as the API server applies defaults before validating.
    kwargs: dict[str, Any] = {}
    if old is not None:
        old_spec, _ = _parse_spec(resource.spec, old.get("spec", {}), spec_schema)
        if old_spec is not None:
            kwargs["old"] = old_spec.to_wire()
    wire = spec.to_wire()
    problems = check_rules(spec_schema, wire, "spec", **kwargs)
    # The whole object's rules (its name against its children's), on what a CRD rule sees of metadata.
    root = {"x-kubernetes-validations": _schema(resource.kind).get("x-kubernetes-validations", [])}
    problems += check_rules(root, {"metadata": {"name": doc["metadata"]["name"]}, "spec": wire}, "")
    problems = sorted(problems)
    return (None if problems else spec), problems


def serve_name_problems(doc: Any) -> list[Problem]:
    """A FineTuneJob whose spec.serve has no name gives its ModelServe the job's name, which must then be a
    Service name too. Not a CRD rule: a job that already trains under such a name must keep training (its
    status writes would be refused); the operator refuses it before any pod (render/desired.py), `modelforge
    validate` before `kubectl apply`."""
    if not isinstance(doc, dict) or doc.get("kind") != "FineTuneJob":
        return []
    serve = (doc.get("spec") or {}).get("serve")
    name = str((doc.get("metadata") or {}).get("name") or "")
    if not isinstance(serve, dict) or serve.get("name") or (len(name) <= 63 and re.match(DNS_1035, name)):
        return []
    return [Problem("spec.serve.name", f"the ModelServe of spec.serve takes the job's name, {name!r}, which is not "
                    f"a valid ModelServe name (a Service's: {SERVE_NAME_RULES}); set spec.serve.name")]  # fmt: skip


def validate_document(doc: Any, old: dict[str, Any] | None = None) -> list[Problem]:
    """Every problem in one document; `old` (the stored object) enables the immutability rules."""
    problems = _check(doc, old)[1]
    return problems or serve_name_problems(doc)


def parse_resource(doc: Any) -> Parsed:
    """The typed form of a valid document, or SpecError listing every problem."""
    spec, problems = _check(doc, None)
    if problems:
        raise SpecError(problems)
    meta = doc["metadata"]
    return Parsed(RESOURCES_BY_KIND[doc["kind"]], meta["name"], meta.get("namespace"), spec, doc)
