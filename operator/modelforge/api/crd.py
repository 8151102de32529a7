"""The CustomResourceDefinitions of both resources, generated from the pydantic models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .base import DNS_1035, GROUP, SERVE_NAME_RULES, VERSION, CelRule
from .finetunejob import FineTuneJobSpec, FineTuneJobStatus
from .modelserve import ModelServeSpec, ModelServeStatus
from .schema import structural_schema


@dataclass(frozen=True)
class Resource:
    """A kind we define: its names, models and `kubectl get` columns."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[dict[str, Any], ...]
    description: str
    # Rules on the whole object (metadata.name is all of metadata a CRD rule may read), at the schema's root.
    rules: tuple[CelRule, ...] = ()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


# A name that is valid for the object but not for its children is refused when it is applied, not later
# when the operator's Service write fails: the endpoint is http://NAME.NAMESPACE.svc.
SERVE_NAME = CelRule(
    f"size(self.metadata.name) <= 63 && self.metadata.name.matches('{DNS_1035}')",
    "metadata.name: a ModelServe's name is also its Service's (http://NAME.NAMESPACE.svc:8000): use "
    + SERVE_NAME_RULES,
)
FINETUNEJOB = Resource(
    kind="FineTuneJob",
    plural="finetunejobs",
    short_names=("ftj",),
    spec=FineTuneJobSpec,
    status=FineTuneJobStatus,
    description="FineTuneJob fine-tunes a model with ms-swift (LoRA, QLoRA or full) on one or many GPU nodes.",
    columns=(
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        # Kueue's reason (Pending, Inadmissible, Preempted ...) for a queued job; "Admitted" once admitted; the
        # message is the Admitted condition's (`kubectl describe`, or -o wide).
        {"name": "Kueue", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Admitted")].reason'},
        {
            "name": "Kueue Message",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Admitted")].message',
            "priority": 1,
        },
        {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
        {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus"},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
        {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
        {"name": "Eval", "type": "string", "jsonPath": ".status.evaluation.summary"},
        {"name": "ETA", "type": "string", "jsonPath": ".status.progress.eta", "priority": 1},
        {"name": "Model", "type": "string", "jsonPath": ".spec.model.source", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ),
)

MODELSERVE = Resource(
    kind="ModelServe",
    plural="modelserves",
    short_names=("mserve",),
    spec=ModelServeSpec,
    status=ModelServeStatus,
    description="ModelServe serves a model (hub, PVC or a FineTuneJob's output) behind an OpenAI-compatible API.",
    columns=(
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Model", "type": "string", "jsonPath": ".status.modelPath"},
        {"name": "TP", "type": "integer", "jsonPath": ".spec.tensorParallel"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ),
    rules=(SERVE_NAME,),
)

RESOURCES = (FINETUNEJOB, MODELSERVE)
RESOURCES_BY_KIND = {r.kind: r for r in RESOURCES}


def openapi_schema(resource: Resource) -> dict[str, Any]:
    """The whole object's openAPIV3Schema (apiVersion, kind, metadata, spec, status)."""
    spec = structural_schema(resource.spec)
    status = structural_schema(resource.status)
    status.pop("description", None)
    rules = {"x-kubernetes-validations": [r.to_schema() for r in resource.rules]} if resource.rules else {}
    return {
        "type": "object",
        "description": resource.description,
        **rules,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "modelforge.io/v1alpha1"},
            "kind": {"type": "string", "description": resource.kind},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": {
                **status,
                "description": f"Observed state of the {resource.kind}, written by the operator.",
            },
        },
    }


def build_crd(resource: Resource) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": resource.crd_name,
            "labels": {"app.kubernetes.io/name": "modelforge", "app.kubernetes.io/part-of": "modelforge"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.kind.lower(),
                "shortNames": list(resource.short_names),
                "categories": ["modelforge"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(resource.columns),
                    "schema": {"openAPIV3Schema": openapi_schema(resource)},
                }
            ],
        },
    }
