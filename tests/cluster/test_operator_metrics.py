"""The running operator's own /metrics, scraped as the chart's ServiceMonitor would while it reconciles a
FineTuneJob through a gang restart to Succeeded and a ModelServe: the values follow what happened, and
every operator metric that the chart's dashboard or alerts use is really served (the launcher's are
scraped from a real run in tests/integration/test_observability.py)."""

from __future__ import annotations

import re

from modelforge.launcher.progress import METRICS
from tests.integration.test_observability import dashboard_metrics, family

from .kube import Kube
from .operator import OperatorProcess
from .test_finetunejob import finetunejob, retryable, running_pods, status
from .test_modelserve import serve

SAMPLE = re.compile(r"^(modelforge_[a-z0-9_]+)(\{[^}]*\})? (\S+)$", re.M)


def samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for the operator's own series."""
    return {name + (labels or ""): float(value) for name, labels, value in SAMPLE.findall(text)}


def test_the_running_operator_serves_what_the_dashboard_uses(kube: Kube, operator: OperatorProcess,
                                                              claims: str) -> None:  # fmt: skip
    ns = claims
    before = samples(operator.scrape())
    succeeded = 'modelforge_finetunejobs{phase="Succeeded"}'  # this job is one, while it exists
    kube.create(finetunejob(ns, failurePolicy={"maxRestarts": 1, "backoffSeconds": 0}))
    pod = running_pods(kube, ns, "sft", 1, 1)[0]
    kube.finish_pod(ns, pod["metadata"]["name"], 75, message=retryable())
    pod = running_pods(kube, ns, "sft", 2, 1)[0]
    done = {"outcome": "Succeeded", "reason": "Completed", "message": "trained 100 step(s)", "last_step": 100,
            "total_steps": 100}  # fmt: skip
    kube.finish_pod(ns, pod["metadata"]["name"], 0, message=done)
    kube.wait_for(lambda: status(kube, ns).get("phase") == "Succeeded", 30, "phase Succeeded")
    kube.create(serve(ns))
    label = f'{{modelserve="chat",namespace="{ns}"}}'

    def scraped() -> dict[str, float] | None:
        seen = samples(operator.scrape())
        return seen if f"modelforge_modelserve_ready_replicas{label}" in seen else None

    seen = kube.wait_for(scraped, 30, "the serve in the operator's metrics")
    # Other modules' jobs may still be counted (one operator per module, one control plane per session):
    # the restart counter is compared with the scrape before this job.
    assert seen["modelforge_restarts_total"] - before.get("modelforge_restarts_total", 0) >= 1, seen
    assert seen.get(succeeded, 0) >= 1, seen  # a gauge: jobs of earlier modules' deleted namespaces leave it
    assert seen["modelforge_reconcile_seconds_count"] >= 3, seen

    used, _ = dashboard_metrics()
    launcher = {name for name, _, _ in METRICS}
    served = {family(key.split("{", 1)[0]) for key in seen}
    assert used - launcher, "the dashboard uses no operator metric: nothing to check here"
    missing = used - launcher - served
    assert not missing, f"the dashboard or alerts use operator metrics the running operator does not serve: {missing}"
