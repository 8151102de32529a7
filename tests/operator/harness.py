"""The real kopf operator against the kmock Kubernetes emulator, with the test playing the cluster.

kmock keeps objects in memory and serves list/watch/get/create/patch/delete over real HTTP. It runs no
controllers (nothing turns a Job into Pods) and no garbage collection, so tests create Pods and set their
status themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import attrs
import kmock
import kopf

from modelforge.controller.config import ControllerConfig
from modelforge.controller.handlers import register
from modelforge.render.settings import RenderSettings

RESOURCES = {
    "modelforge.io/v1alpha1/finetunejobs": ("FineTuneJob", True, {"status"}),
    "modelforge.io/v1alpha1/modelserves": ("ModelServe", True, {"status"}),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False, set()),
    "v1/namespaces": ("Namespace", False, set()),
    "v1/pods": ("Pod", True, {"status"}),
    "v1/services": ("Service", True, set()),
    "v1/configmaps": ("ConfigMap", True, set()),
    "v1/events": ("Event", True, set()),
    "batch/v1/jobs": ("Job", True, {"status"}),
    "apps/v1/deployments": ("Deployment", True, {"status"}),
}
PATHS = {
    "FineTuneJob": "/apis/modelforge.io/v1alpha1/namespaces/{ns}/finetunejobs",
    "ModelServe": "/apis/modelforge.io/v1alpha1/namespaces/{ns}/modelserves",
    "Pod": "/api/v1/namespaces/{ns}/pods",
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
}
PLURALS = {"Job": "jobs", "Pod": "pods", "Service": "services", "ConfigMap": "configmaps", "Event": "events",
           "FineTuneJob": "finetunejobs", "ModelServe": "modelserves", "Deployment": "deployments"}  # fmt: skip


class Emulator(kmock.KubernetesEmulator):
    """kmock plus what every real API server does on create: a name from generateName (kopf posts events
    that way), a resourceVersion (kopf's patches test it) and a uid (owner references need it)."""

    async def _handle(self, request: kmock.Request) -> Any:
        content_type = request.headers.get("Content-Type", "")
        if request.action == kmock.action.UPDATE and "apply-patch" in content_type and request.name:
            # Server-side apply creates an absent object; kmock only merges into existing ones.
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                request = attrs.evolve(request, action=kmock.action.CREATE)
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:6]}"
            meta.setdefault("resourceVersion", "1")
            meta.setdefault("uid", str(uuid.uuid4()))
        return await super()._handle(request)


class Cluster:
    """What a test needs: create and patch over HTTP (so watches fire), read objects, wait for conditions."""

    def __init__(self, emulator: Emulator, url: str, session: aiohttp.ClientSession):
        self.emulator = emulator
        self.url = url
        self.session = session

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"].setdefault("uid", f"uid-{obj['metadata']['name']}")
        path = PATHS[obj["kind"]].format(ns=obj["metadata"]["namespace"])
        async with self.session.post(self.url + path, json=obj) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def patch(self, kind: str, namespace: str, name: str, body: dict[str, Any], status: bool = False) -> None:
        path = PATHS[kind].format(ns=namespace) + f"/{name}" + ("/status" if status else "")
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.session.patch(self.url + path, json=body, headers=headers) as response:
            assert response.status < 300, await response.text()

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        async with self.session.delete(self.url + PATHS[kind].format(ns=namespace) + f"/{name}") as response:
            assert response.status < 300, await response.text()

    def objects(self, kind: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        plural = PLURALS[kind]
        return {
            name: obj.raw for (resource, ns, name), obj in self.emulator.objects.items()
            if resource.plural == plural and not obj.deleted and (namespace is None or ns == namespace)
        }  # fmt: skip

    def events(self, namespace: str) -> list[dict[str, Any]]:
        """Events have generated names, so they are listed, not keyed."""
        return [
            obj.raw for (resource, ns, _), obj in self.emulator.objects.items()
            if resource.plural == "events" and ns == namespace
        ]  # fmt: skip

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects(kind, namespace).get(name)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


@contextlib.asynccontextmanager
async def emulated_cluster() -> AsyncIterator[Cluster]:
    async with Emulator() as emulator, kmock.Server(emulator):
        for key, (kind, namespaced, subresources) in RESOURCES.items():
            emulator.resources[key] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, subresources=subresources,
                verbs={"list", "watch", "get", "patch", "create", "delete", "update"},
            )  # fmt: skip
        async with aiohttp.ClientSession() as session:
            yield Cluster(emulator, str(emulator.url).rstrip("/"), session)


@contextlib.asynccontextmanager
async def running_operator(cluster: Cluster, progress_port: int = 8090, **config: Any) -> AsyncIterator[None]:
    """The real kopf operator with our handlers, in this event loop, until the block exits."""
    settings = ControllerConfig(
        render=replace(RenderSettings(), progress_port=progress_port),
        api_server=cluster.url, poll_seconds=0.2, metrics_port=None, **config,
    )  # fmt: skip
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    # The operator gets its own thread and event loop, as in production it is a separate process: kopf
    # waits for its handler threads when stopping, and those may be waiting for the emulator's answer.
    stop, ready = threading.Event(), threading.Event()
    operator_kwargs = {"registry": registry, "clusterwide": True, "standalone": True, "stop_flag": stop,
                       "ready_flag": ready}  # fmt: skip
    thread = threading.Thread(target=lambda: asyncio.run(kopf.operator(**operator_kwargs)), daemon=True)
    thread.start()
    if not await asyncio.to_thread(ready.wait, 20):
        raise AssertionError("the operator did not start within 20 s")
    try:
        yield
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 60)
        if thread.is_alive():
            raise AssertionError("the operator did not stop within 60 s")
