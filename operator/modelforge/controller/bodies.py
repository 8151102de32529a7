"""Helpers shared by the FineTuneJob and ModelServe reconciles."""

from __future__ import annotations

from typing import Any

import kopf

from .reconcilers import StatusPatch


def document_of(body: kopf.Body) -> dict[str, Any]:
    """The object as a spec file would hold it, for the same validation `modelforge validate` runs."""
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": body.metadata.name, "namespace": body.metadata.namespace},
        "spec": dict(body.spec),
    }


def patch_changed(patch: StatusPatch, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Patch only the status keys that changed; a key gone from `new` is removed (null in a merge patch)."""
    for key in set(old) | set(new):
        if old.get(key) != new.get(key):
            patch.status[key] = new.get(key)
