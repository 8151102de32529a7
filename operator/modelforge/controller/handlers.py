"""kopf handlers for FineTuneJob and ModelServe: one reconcile per kind, driven by `Reconcilers`.

Level-triggered: every run observes the current attempt (Job, Pods, rank-0 /progress), asks the pure
lifecycle what to do, applies it, and patches only the status keys that changed.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import kopf

from ..api.base import GROUP, VERSION
from ..api.finetunejob import Runtime
from ..api.validate import SpecError, parse_resource
from ..plan.lifecycle import Observed, rank0_pod
from ..plan.phases import job_phase_of
from ..render.desired import desired_finetunejob
from ..render.names import attempt_name, label_value
from ..render.training import Owner
from .bodies import document_of, patch_changed
from .config import ControllerConfig
from .kube import Kube, fetch_json, make_api_client
from .metrics import OperatorMetrics
from .reconcilers import Reconcilers, StatusPatch
from .serve import reconcile_serve

PLURAL = "finetunejobs"
SERVES = "modelserves"


def observe(
    kube: Kube, config: ControllerConfig, namespace: str, name: str, status: dict[str, Any], generation: int | None,
    ray: bool = False,
) -> Observed:  # fmt: skip
    """The current attempt: its Job (or RayJob, `ray`), pods, rank 0's (or the Ray head's) /progress."""
    attempt, phase = int(status.get("attempt") or 0), job_phase_of(status).value
    if attempt == 0:
        return Observed()
    job = (kube.get_rayjob if ray else kube.get_job)(namespace, attempt_name(name, attempt))
    labels = {"modelforge.io/job": label_value(name), "modelforge.io/attempt": str(attempt)}
    # The attempt's training pods. KubeRay's submitter pod carries the attempt's labels too (`modelforge logs`
    # reads the driver's log there), but it trains nothing: its troubles are the RayJob's status's.
    pods = tuple(p for p in kube.list_pods(namespace, labels)
                 if p.get("metadata", {}).get("labels", {}).get("modelforge.io/ray-node") != "submitter")  # fmt: skip
    progress = None
    rank0 = rank0_pod(pods)
    if phase in ("Starting", "Running") and rank0 and rank0.get("status", {}).get("phase") == "Running":
        ip = rank0["status"].get("podIP")
        if ip:
            progress = fetch_json(f"http://{ip}:{config.render.progress_port}/progress",
                                  config.progress_timeout_seconds)  # fmt: skip
    suspended = job is not None and bool((job.get("spec") or {}).get("suspend"))  # queued, or preempted
    refusal = None
    if job is not None and not ray and not suspended and not pods and _age_seconds(job) >= REFUSAL_GRACE_SECONDS:
        refusal = kube.pod_creation_refusal(namespace, attempt_name(name, attempt), job["metadata"].get("uid"))
    attempt_spec = None
    if (job is not None and phase in ("Queued", "Starting", "Running") and generation is not None
            and status.get("attemptGeneration") not in (None, generation)):  # fmt: skip
        attempt_spec = kube.attempt_spec(namespace, attempt_name(name, attempt))
    workload = None
    if job is not None and suspended and not ray and "kueue.x-k8s.io/queue-name" in job["metadata"].get("labels", {}):
        workload = kube.kueue_workload(namespace, job["metadata"]["uid"])  # why it waits, in Kueue's words
    return Observed(job, pods, progress, refusal, attempt_spec, workload)


# A Job's pods normally exist within a second or two; only then is "no pods" worth asking events about.
REFUSAL_GRACE_SECONDS = 3.0


def _age_seconds(obj: dict[str, Any]) -> float:
    created = obj.get("metadata", {}).get("creationTimestamp")
    if not created:
        return 0.0
    return (datetime.now(UTC) - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()


Logger = logging.Logger | logging.LoggerAdapter[Any]


def reconcile(body: kopf.Body, patch: StatusPatch, memo: Any, logger: Logger) -> None:
    started = time.perf_counter()
    kube: Kube = memo.kube
    config: ControllerConfig = memo.config
    metrics: OperatorMetrics = memo.metrics
    name, namespace = body.metadata.name, str(body.metadata.namespace)
    spec, problems = None, []
    try:
        spec = parse_resource(document_of(body)).spec
    except SpecError as exc:
        problems = [str(p) for p in exc.problems]
    status = dict(body.get("status") or {})
    # None: the spec cannot be read, so neither can its runtime (an attempt is deleted as either kind).
    ray = None if spec is None else spec.distributed.runtime == Runtime.RAY
    observed = observe(kube, config, namespace, name, status, body.metadata.get("generation"), bool(ray))
    owner = Owner("FineTuneJob", name, namespace, body.metadata.uid)
    desired = desired_finetunejob(owner, spec, problems, status, observed, datetime.now(UTC).replace(tzinfo=None),
                                  body.metadata.get("generation"), config.plan, config.render)  # fmt: skip
    decision = desired.decision
    if decision.delete_attempt:
        kube.delete_attempt(namespace, attempt_name(name, decision.delete_attempt), ray)
        logger.info(f"deleted attempt {decision.delete_attempt}")
    for obj in desired.children:  # a training attempt is immutable: created once, replaced by the next attempt
        if kube.create_or_adopt(obj):
            logger.info(f"created {obj['kind']} {obj['metadata']['name']}")
    patch.events.extend(decision.events)  # posted once the status is written
    new = decision.wire
    if new.get("restarts", 0) > status.get("restarts", 0):
        metrics.restarts.inc()

    patch_changed(patch, status, new)
    metrics.observe_phase(f"{namespace}/{name}", new.get("phase"))
    metrics.reconcile_seconds.observe(time.perf_counter() - started)


def register(registry: kopf.OperatorRegistry, config: ControllerConfig) -> None:
    """Attach the FineTuneJob and ModelServe handlers and the operator settings to `registry`.

    Only watch-event handlers are used, never kopf's timers, daemons or change handlers: timers make kopf
    put a finalizer on every object (and nobody removes it once the operator is uninstalled, so the
    objects can never be deleted), and change handlers write bookkeeping annotations on every object.
    Instead the watch feeds an in-memory cache (`Reconcilers`); a spec change (generation) or a new
    object is reconciled at once, and one poller revisits only the objects that are still active
    (a finished FineTuneJob costs no API call at all). See docs/operator.md.
    """

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.posting.enabled = False  # log lines stay logs; our events are posted by Reconcilers
        settings.execution.max_workers = config.workers
        settings.watching.server_timeout = 300
        if config.namespaces:
            # Exact namespaces: kopf would otherwise LIST namespaces cluster-wide to match patterns, which
            # the namespaced chart (a Role per watched namespace) rightly does not grant.
            settings.scanning.disabled = True
        memo.config = config
        # kopf's handler threads and the poller's share one client: a connection for each.
        memo.kube = Kube(make_api_client(config.api_server, 2 * config.workers + 4))
        memo.metrics = OperatorMetrics()
        if config.metrics_port is not None:
            memo.metrics.serve(config.metrics_port)
        memo.reconcilers = Reconcilers(memo, {PLURAL: reconcile, SERVES: reconcile_serve})
        memo.reconcilers.start()

    @kopf.on.cleanup(registry=registry)
    def stop(memo: kopf.Memo, **_: Any) -> None:
        memo.reconcilers.stop()

    if config.api_server:

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=config.api_server, insecure=True)  # type: ignore[arg-type]

    else:
        # A registry of our own gets none of kopf's default login handlers: without this one the operator
        # cannot authenticate to a real API server at all (in a pod: the ServiceAccount token; elsewhere:
        # the kubeconfig). Found on the real control plane; the emulator needs no credentials.
        @kopf.on.login(registry=registry)
        def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            return kopf.login_via_client(**kwargs)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def on_job_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        memo.reconcilers.on_event(PLURAL, event)

    @kopf.on.event(GROUP, VERSION, SERVES, registry=registry)
    def on_serve_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        memo.reconcilers.on_event(SERVES, event)
