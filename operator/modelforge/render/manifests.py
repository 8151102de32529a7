"""Render any ModelForge document into the children the operator creates for it."""

from __future__ import annotations

from typing import Any

from ..api.validate import parse_resource
from ..plan.resolve import resolve
from .settings import RenderSettings
from .training import Owner, render_attempt

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def render_resource(
    doc: dict[str, Any], settings: RenderSettings, *, attempt: int = 1, namespace: str = "default"
) -> list[dict[str, Any]]:
    """Children of a validated FineTuneJob (attempt N). Raises ValueError naming the field on a bad plan."""
    parsed = parse_resource(doc)
    owner = Owner(parsed.resource.kind, parsed.name, parsed.namespace or namespace, doc["metadata"].get("uid")
                  or PLACEHOLDER_UID)  # fmt: skip
    if parsed.resource.kind == "FineTuneJob":
        resolve(parsed.spec)  # batch arithmetic errors surface here, before anything is created
        return render_attempt(owner, parsed.spec, attempt, settings,
                              active_deadline_seconds=parsed.spec.active_deadline_seconds)  # fmt: skip
    return []
