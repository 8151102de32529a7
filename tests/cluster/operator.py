"""The chart, installed for real, and the operator as a local process with the chart's identity.

`helm install` puts the CRDs, the ServiceAccount, the (Cluster)Roles and the Deployment into the local
control plane. kwok does not run containers, so the operator's Deployment never really starts; the
operator runs here instead, as `modelforge operator`, with the env of the chart's Deployment and a
token of the chart's ServiceAccount (the TokenRequest API). Every call it makes is therefore judged by
the real RBAC authorizer against the chart's rules: a 403 anywhere fails the test that caused it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .kube import ROOT, helm, kubectl, stop_process_group

CHART = ROOT / "helm" / "modelforge"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Release:
    kubeconfig: Path  # the admin's
    name: str = "modelforge"
    namespace: str = "modelforge-system"
    values: dict[str, str] = field(default_factory=dict)

    @property
    def service_account(self) -> str:
        return f"{self.name}-operator"

    def install(self) -> dict[str, Any]:
        sets = [arg for k, v in {"operator.pollSeconds": "1", **self.values}.items() for arg in ("--set", f"{k}={v}")]
        helm(self.kubeconfig, "upgrade", "--install", self.name, str(CHART), "-n", self.namespace,
             "--create-namespace", "--wait=false", *sets)  # fmt: skip
        manifest = helm(self.kubeconfig, "get", "manifest", self.name, "-n", self.namespace).stdout
        docs = [d for d in yaml.safe_load_all(manifest) if d]
        return next(d for d in docs if d["kind"] == "Deployment")

    def uninstall(self) -> None:
        helm(self.kubeconfig, "uninstall", self.name, "-n", self.namespace, "--wait", "--timeout", "60s",
             check=False)  # fmt: skip

    def operator_kubeconfig(self, dest: Path) -> Path:
        """A kubeconfig that authenticates as the chart's ServiceAccount (a bound token, 2 h)."""
        token = kubectl(self.kubeconfig, "create", "token", self.service_account, "-n", self.namespace,
                        "--duration=2h").stdout.strip()  # fmt: skip
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster = admin["clusters"][0]["cluster"]
        dest.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "operator",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": self.service_account, "user": {"token": token}}],
            "contexts": [{"name": "operator", "context": {"cluster": "local", "user": self.service_account,
                                                          "namespace": self.namespace}}],
        }))  # fmt: skip
        return dest


class OperatorProcess:
    """`modelforge operator` in its own process group, configured as the chart's Deployment configures it."""

    def __init__(self, release: Release, workdir: Path, env: dict[str, str] | None = None):
        self.release = release
        self.workdir = workdir
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "operator.log"
        self.deployment: dict[str, Any] = {}
        self.liveness_port = 0
        self.metrics_port = 0

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.deployment:
            self.deployment = self.release.install()
        container = self.deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
        # The chart's ports are fine in a pod; on this machine a fresh pair, so that a health check can
        # never reach another operator (one left over by a killed test run, say).
        env["MODELFORGE_LIVENESS_PORT"], env["MODELFORGE_METRICS_PORT"] = str(free_port()), str(free_port())
        self.liveness_port = int(env["MODELFORGE_LIVENESS_PORT"])
        self.metrics_port = int(env["MODELFORGE_METRICS_PORT"])
        kubeconfig = self.release.operator_kubeconfig(self.workdir / "operator.kubeconfig")
        full_env = {**os.environ, **env, **self.extra_env, "KUBECONFIG": str(kubeconfig)}
        command = [str(Path(sys.executable).parent / container["command"][0]), *container["command"][1:],
                   *container.get("args", [])]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the operator exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1):
                    if self.proc.poll() is None:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"the operator was not live within 60 s:\n{self.log_text()[-3000:]}")

    def scrape(self) -> str:
        """The operator's /metrics, as Prometheus (or the chart's ServiceMonitor) reads it."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)

    def kill(self) -> None:
        """As a crashed pod: SIGKILL, no cleanup."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def forbidden(self) -> list[str]:
        """Lines in which the RBAC authorizer refused the operator ("... is forbidden: User ... cannot ...").
        Other 403s (creating in a namespace that a test is deleting) are not about the chart's rules."""
        return [line for line in self.log_text().splitlines() if "forbidden: User" in line]
