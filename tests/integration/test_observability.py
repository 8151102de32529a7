"""Observability of a real CPU run (the real `swift sft` on the tiny model): the launcher's /metrics scraped
while it trains, the loss curve PNG it writes at the end, and the chart's Grafana dashboard and alerts
(rendered by the real helm) using only metric names that something really exports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageStat
from prometheus_client import generate_latest

from modelforge.controller.metrics import OperatorMetrics

from .test_helm_chart import CHART, helm
from .test_local_run import write_spec
from .test_swift_serving import free_port

pytestmark = pytest.mark.integration
SAMPLE = re.compile(r"^(modelforge_[a-z0-9_]+)(?:\{[^}]*\})? ", re.M)
NAME = re.compile(r"\bmodelforge_[a-z0-9_]+")


def _scrape_while_training(spec: Path, out: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "modelforge.cli", "run", str(spec), "--output", str(out),
                             "--progress-port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    names: set[str] = set()
    try:
        while proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    names |= set(SAMPLE.findall(response.read().decode()))
            except OSError:
                pass  # not serving yet (pre-flight) or already stopped
            time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), names


def family(name: str) -> str:
    """A histogram's series (_bucket, _sum, _count) belong to its family name."""
    return re.sub(r"_(bucket|sum|count)$", "", name)


def _operator_names() -> set[str]:
    """What the operator's own exporter serves once it has seen a job restart and a serve."""
    metrics = OperatorMetrics()
    metrics.observe_phase("ns/job", "Running")
    metrics.restarts.inc()
    metrics.reconcile_seconds.observe(0.01)
    metrics.observe_serve("ns", "serve", {"phase": "Ready", "readyReplicas": 1, "adapters": [{"state": "Loaded"}]})
    text = generate_latest(metrics.registry).decode()
    return set(SAMPLE.findall(text))


def test_a_real_run_serves_the_slis_and_draws_its_loss_curve_and_the_dashboard_uses_only_them(tmp_path, tiny_model):
    spec = write_spec(tmp_path, tiny_model, hyperparameters={"maxSteps": 40, "batchSizePerDevice": 2,
                                                             "maxLength": 256, "loggingSteps": 1},
                      checkpointing={"saveSteps": 10},
                      validation={"splitRatio": 0.2, "evalSteps": 10})  # fmt: skip
    out = tmp_path / "out"
    result, launcher = _scrape_while_training(spec, out)
    assert result.returncode == 0, result.stderr[-3000:]
    for sli in ("modelforge_train_loss", "modelforge_train_step_seconds", "modelforge_train_seconds_to_first_step",
                "modelforge_train_seconds_since_step", "modelforge_train_preflight_seconds",
                "modelforge_train_checkpoint_save_seconds", "modelforge_eval_loss",
                "modelforge_train_tokens_per_second_per_gpu"):  # fmt: skip
        assert sli in launcher, f"{sli} never served while training; served: {sorted(launcher)}"

    # The picture: decodes, 800 x 600, not blank; status (the summary) links it.
    summary = json.loads((out / "modelforge-summary.json").read_text())
    plot = Path(summary["outputs"]["lossPlot"])
    assert plot == out / "plots" / "loss.png"
    with Image.open(plot) as image:
        image.load()
        assert image.format == "PNG" and image.size == (800, 600)
        spread = ImageStat.Stat(image.convert("L")).stddev[0]
        colours = len(image.convert("RGB").getcolors(maxcolors=1 << 16) or ())
    assert spread > 10 and colours > 20, (spread, colours)

    # The chart's dashboard and alerts, as the real helm renders them.
    used, alerts = dashboard_metrics()
    exported = {family(n) for n in launcher | _operator_names()}
    assert used and not used - exported, f"panels or alerts use metrics nobody exports: {sorted(used - exported)}"
    assert alerts == {"ModelForgeTrainingStalled", "ModelForgeRestartsClimbing", "ModelForgeServeDegraded"}


def dashboard_metrics() -> tuple[set[str], set[str]]:
    """The metric families the chart's Grafana dashboard and PrometheusRule use (as the real helm renders
    them), and the alerts' names. tests/cluster/test_operator_metrics.py checks the operator's against the
    running operator."""
    on = [f"metrics.{part}.enabled=true" for part in ("grafanaDashboard", "prometheusRule", "podMonitor")]
    rendered = helm("template", "t", str(CHART), *(x for value in on for x in ("--set", value)))
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    (dashboard,) = [json.loads(d["data"]["modelforge-training.json"]) for d in docs if d["kind"] == "ConfigMap"
                    and d["metadata"]["labels"].get("grafana_dashboard") == "1"]  # fmt: skip
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert {"PodMonitor", "PrometheusRule"} <= {d["kind"] for d in docs}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    used = {family(n) for e in exprs for n in NAME.findall(e)}
    return used, {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}


def test_the_dashboard_is_off_by_default():
    rendered = helm("template", "t", str(CHART))
    assert rendered.returncode == 0, rendered.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d]
    assert "PrometheusRule" not in kinds and "PodMonitor" not in kinds
    assert not any("dashboard" in (d.get("metadata") or {}).get("name", "")
                   for d in yaml.safe_load_all(rendered.stdout) if d)  # fmt: skip
