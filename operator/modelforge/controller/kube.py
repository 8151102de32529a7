"""The few Kubernetes API calls the controller makes (and the chart's RBAC grants: see rbac_rules)."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from ..api.base import GROUP, VERSION

# What kopf itself needs to run the handlers (framework): watch and patch our resources, post events,
# and watch CRDs so that resources installed later are noticed.
KOPF_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # No patch on the objects themselves: only event handlers, so kopf writes no finalizer or annotation.
    ("modelforge.io", "finetunejobs", ("list", "watch")),
    ("modelforge.io", "modelserves", ("list", "watch")),
    ("modelforge.io", "finetunejobs/status", ("patch",)),
    ("modelforge.io", "modelserves/status", ("patch",)),
    ("", "events", ("create",)),
    ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch")),
)
# Every call below (application), as (apiGroup, resource, verbs). A test checks that the Helm chart grants
# exactly KOPF_RULES + RBAC_RULES, nothing more.
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("batch", "jobs", ("get", "create", "delete")),
    ("apps", "deployments", ("get", "create", "patch")),
    ("", "services", ("get", "create", "patch", "delete")),  # get, patch: keeping the serving Service as specified
    # get: the spec a running attempt was started with; patch: a serve's live adapters (server-side apply)
    ("", "configmaps", ("get", "create", "patch", "delete")),
    ("", "pods", ("list", "patch")),  # patch: the adapters digest annotation on serving pods
    ("", "events", ("list",)),
    ("", "pods/log", ("get",)),
    ("modelforge.io", "finetunejobs", ("get",)),
    ("modelforge.io", "modelserves", ("create",)),
    ("kueue.x-k8s.io", "workloads", ("list",)),  # why a queued attempt waits, in Kueue's words
)
KUEUE_VERSION = "v1beta2"  # Kueue >= 0.15 serves (and stores) its API at v1beta2
# Granted only with the chart's ray.enabled: attempts of `distributed.runtime: ray` are KubeRay RayJobs.
RAY_RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (("ray.io", "rayjobs", ("get", "create", "delete")),)


def make_api_client(server: str | None, connections: int = 10) -> kubernetes.client.ApiClient:
    """An API client for `server`, or from the pod's service account, or from ~/.kube/config, with a
    connection pool as large as the number of reconcile threads (urllib3's default of 10 made a
    16-worker operator drop and reopen connections under load: measured on the cluster tier)."""
    if server:
        configuration = kubernetes.client.Configuration(host=server)
    else:
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = max(connections, 10)
    return kubernetes.client.ApiClient(configuration)


FIELD_MANAGER = "modelforge"
RAY_UNAVAILABLE = {
    404: "distributed.runtime ray needs KubeRay: this cluster has no RayJob resource (ray.io/v1); install "
         "KubeRay (>= 1.3) or use runtime torchrun",
    403: "the operator may not create RayJobs: install the chart with ray.enabled=true for distributed.runtime ray",
}  # fmt: skip
APPLY_PLURALS = {"Service": "services", "Deployment": "deployments", "ConfigMap": "configmaps", "Job": "jobs"}
REQUEST_TIMEOUT = 30  # seconds; a handler must never hang on a silent API server


def _json(response: Any) -> dict[str, Any]:
    return json.loads(response.data)


def api_refusal(exc: BaseException) -> str | None:
    """The API server's own message when it refused a write for a reason the object's owner can act on (an
    invalid child, a quota, an admission webhook: 400, 403, 422 ...); None for what is not a refusal (not
    found, a conflict, throttling, a namespace being deleted, or not an API error at all)."""
    if not isinstance(exc, ApiException) or exc.status is None or not 400 <= exc.status < 500:
        return None
    if exc.status in (401, 404, 409, 429):  # credentials, gone, a race, throttling: not the owner's to fix
        return None
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    if "NamespaceTerminating" in body:
        return None
    try:
        message = json.loads(body).get("message") or ""
    except (ValueError, AttributeError):
        message = ""
    return str(message or exc.reason or f"HTTP {exc.status}")[:2000]


class Kube:
    """Reads return plain dicts (camelCase, as the API server sends them); writes take dicts."""

    def __init__(self, client: kubernetes.client.ApiClient):
        self.client = client
        self.core = kubernetes.client.CoreV1Api(client)
        self.batch = kubernetes.client.BatchV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self._create: dict[str, Callable[..., Any]] = {
            "ConfigMap": self.core.create_namespaced_config_map,
            "Service": self.core.create_namespaced_service,
            "Job": self.batch.create_namespaced_job,
            "Deployment": self.apps.create_namespaced_deployment,
            "ModelServe": lambda ns, obj, **kw: self.custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, "modelserves", obj, **kw
            ),
            "RayJob": lambda ns, obj, **kw: self.custom.create_namespaced_custom_object(
                "ray.io", "v1", ns, "rayjobs", obj, **kw
            ),
        }

    def create_or_adopt(self, obj: dict[str, Any]) -> bool:
        """Create `obj` (field manager `modelforge`); an existing object with the same name is kept
        (reconciles are repeatable). Used for what is immutable once created: a training attempt's
        ConfigMap, Service and Job (a change makes a new attempt), and the ModelServe of spec.serve.
        Returns True when it was created now."""
        namespace = obj["metadata"]["namespace"]
        try:
            self._create[obj["kind"]](namespace, obj, field_manager=FIELD_MANAGER, _preload_content=False,
                                      _request_timeout=REQUEST_TIMEOUT)  # fmt: skip
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status == 403 and "NamespaceTerminating" in str(exc.body or ""):
                return False  # the namespace is being deleted with everything in it: nothing to recreate
            if obj["kind"] == "RayJob" and exc.status in (403, 404):
                raise RuntimeError(RAY_UNAVAILABLE[exc.status]) from None
            raise
        return True

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under the field manager `modelforge`, forcing ownership of the fields we set:
        a changed spec reaches the object, a hand edit of a field we own is reverted, and an unchanged
        object is left alone (no new generation, no rollout). Creates the object when it is absent."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        path = f"{base}/namespaces/{namespace}/{APPLY_PLURALS[kind]}/{name}"
        params = self.client.param_serialize(
            "PATCH", path, query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
            body=obj, auth_settings=["BearerToken"],
        )  # fmt: skip
        response = self.client.call_api(*params, _request_timeout=REQUEST_TIMEOUT)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return _json(response)

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(
            lambda: self.core.read_namespaced_service(
                name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )

    def replace_service_ports(self, namespace: str, name: str, ports: list[dict[str, Any]]) -> None:
        """Take the whole port list back. Server-side apply merges Service ports by (port, protocol), so a
        port someone edited by hand stays beside ours (and clashes by name); this puts ours alone again."""
        self.core.patch_namespaced_service(
            name, namespace, [{"op": "replace", "path": "/spec/ports", "value": ports}],
            field_manager=FIELD_MANAGER, _preload_content=False, _request_timeout=REQUEST_TIMEOUT,
        )  # fmt: skip

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """A merge patch of the pod's annotations; a pod gone meanwhile is fine."""
        try:
            self.core.patch_namespaced_pod(
                name, namespace, {"metadata": {"annotations": annotations}},
                field_manager=FIELD_MANAGER, _preload_content=False, _request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                raise

    def attempt_spec(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The spec an attempt was started with: its ConfigMap's job.json."""
        config_map = self._get(
            lambda: self.core.read_namespaced_config_map(
                name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )
        try:
            spec = json.loads((config_map or {}).get("data", {}).get("job.json", ""))["spec"]
        except (ValueError, KeyError, TypeError):
            return None
        return spec if isinstance(spec, dict) else None

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(
            lambda: self.batch.read_namespaced_job(
                name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )

    def get_rayjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._get(
                lambda: self.custom.get_namespaced_custom_object(
                    "ray.io", "v1", namespace, "rayjobs", name, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except ApiException as exc:
            if exc.status == 403:
                raise RuntimeError(RAY_UNAVAILABLE[403]) from None
            raise

    def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        items = _json(
            self.core.list_namespaced_pod(
                namespace, label_selector=selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )
        # Filter here too: a label selector is the server's job, but emulators may not apply it.
        return [
            pod for pod in items.get("items", [])
            if all(pod.get("metadata", {}).get("labels", {}).get(k) == v for k, v in labels.items())
        ]  # fmt: skip

    def pod_creation_refusal(self, namespace: str, job_name: str, job_uid: str | None = None) -> str | None:
        """The newest FailedCreate event of a Job: why its pods were refused (ResourceQuota, PodSecurity ...).
        The Job controller reports it only as an event; the Job's status stays silent."""
        selector = f"involvedObject.kind=Job,involvedObject.name={job_name},reason=FailedCreate"
        if job_uid:  # not the events of an earlier Job with the same name (events outlive it by an hour)
            selector += f",involvedObject.uid={job_uid}"
        items = _json(self.core.list_namespaced_event(
            namespace, field_selector=selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))  # fmt: skip
        events = sorted(items.get("items", []), key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return str(events[-1].get("message", ""))[:1000] if events else None

    def kueue_workload(self, namespace: str, job_uid: str) -> dict[str, Any] | None:
        """Kueue's Workload for an attempt's Job (its label kueue.x-k8s.io/job-uid): why the Job waits, in
        Kueue's words. None when there is none yet, or no Kueue (no such resource, or the chart's rules do not
        reach it): the lifecycle then says so in its own words."""
        try:
            items = _json(self.custom.list_namespaced_custom_object(
                "kueue.x-k8s.io", KUEUE_VERSION, namespace, "workloads",
                label_selector=f"kueue.x-k8s.io/job-uid={job_uid}",
                _preload_content=False, _request_timeout=REQUEST_TIMEOUT))  # fmt: skip
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise
        workloads = sorted(items.get("items", []), key=lambda w: w.get("metadata", {}).get("creationTimestamp") or "")
        return workloads[-1] if workloads else None

    def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], uid: str | None = None
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; the updated object, or None when the object is gone.
        With `uid`, the patch applies only to that object, not to a new one with the same name."""
        body: dict[str, Any] = {"status": status}
        if uid:
            body["metadata"] = {"uid": uid}  # a precondition: the API server refuses another uid (409)
        try:
            return _json(self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, body, field_manager=FIELD_MANAGER,
                _preload_content=False, _request_timeout=REQUEST_TIMEOUT))  # fmt: skip
        except ApiException as exc:
            if exc.status in (404, 409):
                return None
            raise

    def post_event(self, body: Any, kind: str, reason: str, message: str) -> None:
        """A Kubernetes Event about one of our objects (what `kubectl describe` and `kubectl events` show)."""
        meta = body.get("metadata", {})
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
            "involvedObject": {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                               "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")},
            "type": kind, "reason": str(reason), "message": message[:1024],
            "source": {"component": "modelforge-operator"}, "reportingComponent": "modelforge-operator",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }  # fmt: skip
        try:
            self.core.create_namespaced_event(meta.get("namespace"), event, _preload_content=False,  # type: ignore[arg-type]
                                              _request_timeout=REQUEST_TIMEOUT)  # fmt: skip
        except ApiException as exc:  # an event is worth a log line, never a failed reconcile
            logging.getLogger("modelforge.events").warning(f"could not post event {reason}: {exc.reason}")

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(
            lambda: self.apps.read_namespaced_deployment(
                name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )

    def get_finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(lambda: self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "finetunejobs", name,
            _preload_content=False, _request_timeout=REQUEST_TIMEOUT))  # fmt: skip

    def pod_log_tail(self, namespace: str, name: str, container: str) -> str | None:
        """The last line the container printed (its previous run, after a crash)."""
        try:
            response: Any = self.core.read_namespaced_pod_log(
                name,
                namespace,
                container=container,
                tail_lines=1,
                previous=True,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
            text = response.data.decode(errors="replace")
        except ApiException:
            return None
        return text.strip().splitlines()[-1][:500] if text.strip() else None

    def _get(self, call: Callable[[], Any]) -> dict[str, Any] | None:
        try:
            return _json(call())
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete_attempt(self, namespace: str, name: str, ray: bool | None = False) -> None:
        """Delete an attempt's Job (its pods go with it), Service and ConfigMap, or its RayJob (KubeRay deletes
        the Ray cluster with it) and ConfigMap; missing ones are fine. `ray=None` (the spec cannot be read,
        so its runtime is unknown): both kinds, and a RayJob the chart gives no rights to is not there."""
        body = kubernetes.client.V1DeleteOptions(propagation_policy="Background")

        def delete_rayjob(name: str, namespace: str, **kw: Any) -> Any:
            return self.custom.delete_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", name, **kw)

        torchrun: tuple[Callable[..., Any], ...] = (
            self.batch.delete_namespaced_job,
            self.core.delete_namespaced_service,
        )
        choice: dict[bool | None, tuple[Callable[..., Any], ...]] = {
            True: (delete_rayjob,),
            False: torchrun,
            None: (*torchrun, delete_rayjob),
        }
        deletes: tuple[Callable[..., Any], ...] = (*choice[ray], self.core.delete_namespaced_config_map)
        for delete in deletes:
            try:
                delete(name, namespace, body=body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                unknown_rayjob = ray is None and delete is delete_rayjob and exc.status == 403
                if exc.status != 404 and not unknown_rayjob:
                    raise


def fetch_json(url: str, timeout: float) -> dict[str, Any] | None:
    """GET a JSON document (the launcher's /progress); None when it cannot be read right now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
