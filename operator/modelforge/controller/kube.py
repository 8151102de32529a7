"""The few Kubernetes API calls the controller makes (and the chart's RBAC grants: see rbac_rules)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

# Every call below, as (apiGroup, resource, verbs). A test checks the Helm chart grants exactly these.
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("batch", "jobs", ("get", "create", "delete")),
    ("", "services", ("create", "delete")),
    ("", "configmaps", ("create", "delete")),
    ("", "pods", ("list",)),
)


def make_api_client(server: str | None) -> kubernetes.client.ApiClient:
    """An API client for `server`, or from the pod's service account, or from ~/.kube/config."""
    if server:
        return kubernetes.client.ApiClient(kubernetes.client.Configuration(host=server))
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


def _json(response: Any) -> dict[str, Any]:
    return json.loads(response.data)


class Kube:
    """Reads return plain dicts (camelCase, as the API server sends them); writes take dicts."""

    def __init__(self, client: kubernetes.client.ApiClient):
        self.core = kubernetes.client.CoreV1Api(client)
        self.batch = kubernetes.client.BatchV1Api(client)
        self._create: dict[str, Callable[..., Any]] = {
            "ConfigMap": self.core.create_namespaced_config_map,
            "Service": self.core.create_namespaced_service,
            "Job": self.batch.create_namespaced_job,
        }

    def create_or_adopt(self, obj: dict[str, Any]) -> bool:
        """Create `obj`; an existing object with the same name is kept (reconciles are repeatable).
        Returns True when it was created now."""
        namespace = obj["metadata"]["namespace"]
        try:
            self._create[obj["kind"]](namespace, obj, _preload_content=False)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(self.batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        items = _json(self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False))
        # Filter here too: a label selector is the server's job, but emulators may not apply it.
        return [
            pod for pod in items.get("items", [])
            if all(pod.get("metadata", {}).get("labels", {}).get(k) == v for k, v in labels.items())
        ]  # fmt: skip

    def delete_attempt(self, namespace: str, name: str) -> None:
        """Delete an attempt's Job (its pods go with it), Service and ConfigMap; missing ones are fine."""
        body = kubernetes.client.V1DeleteOptions(propagation_policy="Background")
        for delete in (self.batch.delete_namespaced_job, self.core.delete_namespaced_service,
                       self.core.delete_namespaced_config_map):  # fmt: skip
            try:
                delete(name, namespace, body=body, _preload_content=False)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def fetch_json(url: str, timeout: float) -> dict[str, Any] | None:
    """GET a JSON document (the launcher's /progress); None when it cannot be read right now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
