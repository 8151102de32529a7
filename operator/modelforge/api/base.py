"""Building blocks shared by both resources: the base model, bounded string types, CEL rules."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, to_jsonable_python

GROUP = "modelforge.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class CelRule:
    """A Kubernetes `x-kubernetes-validations` rule, evaluated by the API server and by `modelforge validate`.

    `field_path` points the error at a child field (e.g. `.quantization`), as the API server reports it.
    A rule that mentions `oldSelf` is a transition rule: it only runs on updates.
    """

    rule: str
    message: str
    field_path: str | None = None

    @property
    def is_transition(self) -> bool:
        return "oldSelf" in self.rule

    def to_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def immutable(what: str) -> CelRule:
    """A transition rule that forbids changing a field once the object exists."""
    return CelRule("self == oldSelf", f"{what} is immutable once the resource exists; create a new one instead")


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected, CEL rules in the schema."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        validate_default=False,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if cls.cel_rules:
            target["x-kubernetes-validations"] = [r.to_schema() for r in cls.cel_rules]
        # A block built by default_factory defaults to the block with its own fields' defaults written
        # out. Not `{}`: the API server checks each default against the CEL rules of its schema without
        # applying the nested defaults first, so `{}` fails rules such as `self.engine == 'vllm'`
        # ("no such key: engine") and the CRD is refused (found on the real kube-apiserver).
        for name, info in cls.model_fields.items():
            if info.default_factory is not None:
                value = info.default_factory()  # type: ignore[call-arg]
                default = value.to_wire() if isinstance(value, ApiModel) else to_jsonable_python(value)
                target["properties"][info.alias or name]["default"] = default
        return schema

    @classmethod
    def field_fits(cls, key: str, value: Any) -> bool:
        """Whether the wire field `key` (camelCase) may take `value` as it is: the model's own type and bounds,
        strictly as JSON (no "12" for a number, no true for a count), and finite. What a pod of another version
        reports is kept field by field with this, so one odd field never costs the rest."""
        try:
            cls.model_validate_json(json.dumps({key: value}, allow_nan=False), strict=True)
        except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError; nan/inf: ValueError
            return False
        return value is not None

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, JSON types, unset fields omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --- Bounded scalar types. Every string in the CRD has a maxLength: the API server needs bounds to
# --- estimate CEL cost, and a bound catches pasted garbage early.

Str63 = Annotated[str, StringConstraints(min_length=1, max_length=63)]
Str253 = Annotated[str, StringConstraints(min_length=1, max_length=253)]
Str1k = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Str4k = Annotated[str, StringConstraints(max_length=4096)]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ResourceName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
LabelName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL)]
# A Service's name (RFC 1035 label): a ModelServe's name is its Service's, so its endpoint's DNS name.
DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
SERVE_NAME_RULES = (
    "at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit (no dots)"
)
ServeName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_1035)]

# Kubernetes resource.Quantity as controller-gen renders it: an int or a string like "64Gi" / "500m", less the
# sign: every quantity of ours is a size or a count, and a negative one only fails later, at the pod.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, str) and value.startswith("-"):
        raise ValueError(f"{value!r}: a quantity must not be negative")
    if isinstance(value, str) and not _QUANTITY_RE.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (examples: 8, 500m, 64Gi, 1.5T)")
    if isinstance(value, int) and value < 0:
        raise ValueError("a quantity must not be negative")
    return value


Quantity = Annotated[
    int | Annotated[str, StringConstraints(max_length=64)],
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,  # strings only
            "minimum": 0,  # integers only: the API server refuses a negative one, as `modelforge validate` does
            "x-kubernetes-int-or-string": True,
        }
    ),
]

# Pod-level pass-through objects (tolerations, affinity) keep Kubernetes' own schema: we do not restate it.
FreeObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]

StringMap = Annotated[
    dict[Annotated[str, StringConstraints(max_length=317)], Annotated[str, StringConstraints(max_length=1024)]],
    Field(max_length=64),
]


_QUANTITY_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
}  # fmt: skip


def quantity_bytes(value: int | str) -> float:
    """A Kubernetes quantity as a number (bytes for memory quantities). Parsed here, not with the kubernetes
    client's parse_quantity: the api layer runs where that client is not installed (`modelforge plan` on a
    GPU machine, bench/gpu); a unit test holds the two equal on every suffix and the schema's forms."""
    if isinstance(value, int):
        return float(value)
    for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix]
    return float(value)


# --- extraArgs: engine flags passed through, less the ones that carry a credential. A value in argv is
# --- visible in the pod spec, `ps`, and the engine's own logs (ms-swift and vLLM print their arguments).
# Credential flags of ms-swift, transformers and vLLM: --hub_token, --api_key, --hf-token, --swanlab_token,
# --swanlab_secret, --push_to_hub_token, and any --*password*/--*secret*/--*credentials* or --*token/--*_key
# for api/access/secret/private keys. Deliberately not: --max_new_tokens (tokens), --lazy_tokenize,
# --ssl_keyfile (a path), --reft_layer_key, --lora_target_modules.
CREDENTIAL_FLAG_PATTERN = (
    r"(?i)^--?([a-z0-9]+[-_])*(token|secret|password|passwd|credentials?|apikey|(api|access|secret|private)[-_]key)"
    r"([-_][a-z0-9]+)*(=.*)?$"
)
CREDENTIAL_FLAG_RE = re.compile(CREDENTIAL_FLAG_PATTERN)
# ...except flags about the vocabulary's tokens, which carry none: --stop_token_ids, --pad_token,
# --bos_token_id, --eos_token, --image_token (RE2 has no lookahead, so CEL checks this second pattern).
NOT_CREDENTIAL_FLAG_PATTERN = (
    r"(?i)^--?((pad|bos|eos|stop|unk|sep|cls|mask|special|added|image|video|audio|vision)[-_]tokens?([-_]ids?)?"
    r"|tokens?[-_]ids?)(=.*)?$"
)


def credential_flag_message(secret_field: str) -> str:
    return (
        "this flag carries a credential, and extraArgs end up in the pod's command line and the engine's logs: "
        f"remove it and put the credential in a Secret referenced by {secret_field}"
    )


def _credential_rule(secret_field: str) -> dict[str, Any]:
    rule = {
        "rule": f"!self.matches('{CREDENTIAL_FLAG_PATTERN}') || self.matches('{NOT_CREDENTIAL_FLAG_PATTERN}')",
        "message": credential_flag_message(secret_field),
    }
    return {"x-kubernetes-validations": [rule]}


# Each item refused when it is a credential flag (CEL, so `kubectl apply` refuses it too, at spec.extraArgs[i]).
TrainExtraArgs = Annotated[
    list[Annotated[str, Field(max_length=1024, json_schema_extra=_credential_rule("spec.secrets.hubToken"))]],
    Field(max_length=64),
]
ServeExtraArgs = Annotated[
    list[Annotated[str, Field(max_length=1024, json_schema_extra=_credential_rule("spec.apiKeySecretRef"))]],
    Field(max_length=64),
]
