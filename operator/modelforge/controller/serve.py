"""kopf reconcile for ModelServe, a thin shell: observe (the FineTuneJobs it reads, Deployment, pods,
/v1/models), ask `desired_modelserve` (render/desired.py, shared with `modelforge render`), apply the
Deployment and Service by server-side apply, patch the status keys that changed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from ..api.modelserve import ModelServeSpec
from ..api.validate import SpecError, parse_resource
from ..plan.serving import ServeObserved, jobs_named
from ..render.desired import desired_modelserve
from ..render.names import label_value
from ..render.serving import ADAPTERS_DIGEST, AGENT_PORT, API_PORT
from ..render.training import Owner
from .bodies import document_of, patch_changed
from .kube import Kube, fetch_json
from .reconcilers import StatusPatch


def _observe(kube: Kube, namespace: str, name: str, spec: ModelServeSpec, timeout: float) -> ServeObserved:
    jobs = {job: kube.get_finetunejob(namespace, job) for job in jobs_named(spec)}
    deployment = kube.get_deployment(namespace, name)
    pods = tuple(kube.list_pods(namespace, {"modelforge.io/serve": label_value(name)}))
    reported, unreachable, reports = None, None, []
    asked = []
    for pod in pods:
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in pod.get("status", {}).get("conditions") or [])  # fmt: skip
        ip = pod.get("status", {}).get("podIP")
        if not (ready and ip):
            continue
        if any(c.get("name") == "agent" for c in pod.get("spec", {}).get("containers") or []):
            # The pod's serve agent holds the API key and reports what the engine serves (read-only).
            report = fetch_json(f"http://{ip}:{AGENT_PORT}/adapters", timeout)
            if report is not None:
                reports.append(report)
            else:
                asked.append(f"http://{ip}:{AGENT_PORT}/adapters")
        elif not spec.api_key_secret_ref and reported is None:
            url = f"http://{ip}:{API_PORT}/v1/models"
            data = fetch_json(url, timeout)
            asked.append(url)
            if data is not None:
                reported = tuple(str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict))
    if reported is None and not reports and asked:
        unreachable = f"{asked[0]} does not answer"
    last_line = None
    for pod in pods:
        for container in pod.get("status", {}).get("containerStatuses") or []:
            if (container.get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
                last_line = kube.pod_log_tail(namespace, pod["metadata"]["name"], container.get("name", "engine"))
    return ServeObserved(deployment, pods, reported, last_line, unreachable, jobs, tuple(reports))


def reconcile_serve(body: kopf.Body, patch: StatusPatch, memo: Any, logger: Any = None) -> None:
    kube: Kube = memo.kube
    name, namespace = body.metadata.name, str(body.metadata.namespace)
    spec: ModelServeSpec | None = None
    problems: list[str] = []
    try:
        spec = parse_resource(document_of(body)).spec
    except SpecError as exc:
        problems = [str(p) for p in exc.problems]
    status = dict(body.get("status") or {})
    observed = (_observe(kube, namespace, name, spec, memo.config.progress_timeout_seconds)
                if spec is not None else ServeObserved())  # fmt: skip
    owner = Owner("ModelServe", name, namespace, body.metadata.uid)
    desired = desired_modelserve(owner, spec, problems, status, observed, datetime.now(UTC).replace(tzinfo=None),
                                 body.metadata.get("generation"), memo.config.render)  # fmt: skip
    if desired.deployment is not None and desired.service is not None:
        # Server-side apply (field manager `modelforge`) on every reconcile: spec changes reach the Deployment
        # and the Service (port, type, labels), hand edits of fields we own are reverted, and an unchanged
        # object is not touched by the API server (no new generation, no rollout). The live adapters'
        # ConfigMap first: the pods mount it, and the serve agent in each pod loads what it lists.
        if desired.adapters is not None:
            kube.apply(desired.adapters)
        kube.apply(desired.deployment)
        _keep_ports(kube, namespace, name, desired.service["spec"]["ports"])
        kube.apply(desired.service)
        _nudge(kube, namespace, desired.nudge, logger)
    patch.events.extend(desired.events)  # posted once the status is written
    patch_changed(patch, status, desired.status.to_wire())


_WARNED: set[tuple[str, str, str]] = set()  # said once per pod and list, not on every reconcile


def _nudge(kube: Kube, namespace: str, pods: dict[str, str], logger: Any) -> None:
    """Annotate the pods behind a changed adapters list: their kubelets refresh the mounted copy at once. Only
    a speed-up: a refusal (RBAC without pods/patch, a policy webhook) leaves it to the kubelet's periodic sync."""
    for pod, digest in pods.items():
        try:
            kube.annotate_pod(namespace, pod, {ADAPTERS_DIGEST: digest})
        except ApiException as exc:
            if logger is not None and (namespace, pod, digest) not in _WARNED:
                _WARNED.add((namespace, pod, digest))
                logger.warning(
                    f"could not annotate pod {pod} with its adapters' digest ({exc.status} {exc.reason}); "
                    "its kubelet refreshes the adapters list on its next periodic sync (about a minute)"
                )
            return


def _keep_ports(kube: Kube, namespace: str, name: str, desired: list[dict[str, Any]]) -> None:
    """Ports edited by hand are reverted (server-side apply alone would keep them beside ours)."""
    existing = kube.get_service(namespace, name)
    if existing is None:
        return
    key = ("name", "port", "protocol", "targetPort")
    current = [{k: p.get(k) for k in key} for p in existing.get("spec", {}).get("ports") or []]
    if current != [{k: p.get(k) for k in key} for p in desired]:
        kube.replace_service_ports(namespace, name, desired)
