"""Live LoRA adapters: what to load and unload in a running engine, and what its answers mean. Pure.

The serving pod's agent (`modelforge serve-agent`, launcher/serve_agent.py) reads the desired adapters,
asks the engine what it serves (`/v1/models`: an adapter is an entry whose `parent` is the base model,
its `root` the path it was loaded from), and applies the difference with vLLM's runtime LoRA API
(`/v1/load_lora_adapter`, `/v1/unload_lora_adapter`). Everything that decides lives here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..api.modelserve import AdapterState

LOADED, LOADING, FAILED = AdapterState.LOADED.value, AdapterState.LOADING.value, AdapterState.FAILED.value


@dataclass(frozen=True)
class AdapterResult:
    name: str
    state: str  # Loaded | Loading | Failed
    message: str = ""

    def wire(self) -> dict[str, str]:
        return {"name": self.name, "state": self.state, **({"message": self.message} if self.message else {})}


def served_adapters(models: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """name -> path of the adapters an engine reports on /v1/models (entries with a parent)."""
    return {str(m["id"]): str(m.get("root") or "") for m in models if m.get("parent")}


def adapter_changes(desired: Mapping[str, str], served: Mapping[str, str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(names to unload, (name, path) to load). An adapter whose path changed is unloaded, then loaded."""
    unload = [name for name, path in served.items() if desired.get(name) != path]
    load = [(name, path) for name, path in desired.items() if served.get(name) != path]
    return unload, load


def load_result(name: str, status: int, body: str) -> AdapterResult:
    """What the engine's answer to a load means. vLLM answers 400 "already been loaded" to a second load of
    the same name (a reconcile that raced itself: it is loaded), 404 when the path does not exist."""
    text = " ".join(body.split())[:300]
    if status == 200 or (status == 400 and "already" in body.lower()):
        return AdapterResult(name, LOADED)
    if status == 404:
        return AdapterResult(name, FAILED, f"the engine cannot find the adapter: {text}")
    return AdapterResult(name, FAILED, f"the engine refused to load it (HTTP {status}): {text}")


def unload_done(status: int) -> bool:
    """A 404 to an unload means it is already gone: the goal, not an error."""
    return status in (200, 404)


def combine(reports: Sequence[Mapping[str, Any]], desired: Sequence[str]) -> list[AdapterResult]:
    """One state per desired adapter across every ready replica's agent report: Loaded when loaded in all,
    Failed when it failed in any (with that replica's message), else Loading."""
    out = []
    for name in desired:
        states = []
        for report in reports:
            entry = next((a for a in report.get("adapters") or [] if a.get("name") == name), None)
            states.append(entry or {"name": name, "state": LOADING})
        failed = next((s for s in states if s.get("state") == FAILED), None)
        if failed is not None:
            out.append(AdapterResult(name, FAILED, str(failed.get("message") or "")[:1000]))
        elif states and all(s.get("state") == LOADED for s in states):
            out.append(AdapterResult(name, LOADED))
        else:
            out.append(AdapterResult(name, LOADING, "not loaded in every ready replica yet"))
    return out
