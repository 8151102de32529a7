"""`modelforge operator`: run the kopf operator (the Helm chart's container command)."""

from __future__ import annotations

import logging

import kopf

from .config import ControllerConfig
from .handlers import register


def run_operator(config: ControllerConfig, *, json_logs: bool = True, verbose: bool = False) -> None:
    """Block running the operator: all namespaces, or only config.namespaces."""
    registry = kopf.OperatorRegistry()
    register(registry, config)
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL)
    if not verbose:
        # kopf logs "Handler ... succeeded" for every watch event of every object: noise for a person and
        # measurable CPU at 500 objects. Failures and our own lines (modelforge.*) stay.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        registry=registry,
        standalone=True,  # one replica; no kopf peering CRDs to install
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        liveness_endpoint=f"http://0.0.0.0:{config.liveness_port}/healthz",
    )
