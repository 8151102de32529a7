"""The real Kueue on the local control plane, built from its Go module, started on demand, stopped by PID.

    python -m tests.cluster.kueue build   # go install sigs.k8s.io/kueue/cmd/kueue@KUEUE_VERSION; CRDs + webhooks
    python -m tests.cluster.kueue up      # on a running control plane (make cluster): CRDs, webhooks, the manager
    python -m tests.cluster.kueue down    # webhooks removed first (nothing may depend on a stopped Kueue), then it

How it runs outside a cluster (facts from the v0.17.0 module: cmd/kueue/main.go, apis/config/v1beta2):
- the manager reads the admin kubeconfig (controller-runtime's --kubeconfig), leader election off;
- its webhook server listens on 127.0.0.1:KUEUE_WEBHOOK_PORT with a certificate signed by the control plane's
  CA (SAN 127.0.0.1), and the module's webhook configurations are applied with `url:` + `caBundle` in place of
  the in-cluster Service: only the entries of the batch/Job integration and of Kueue's own API (the Pod,
  Deployment, ... entries would put every Pod behind Kueue);
- internal certificate management off (no Secret, no namespace needed), the visibility API server off
  (VisibilityOnDemand: it wants an APIService), metrics off; Kueue v0.17 still loads a metrics certificate
  from the fixed /etc/kueue/metrics/certs, so the webhook pair is copied there;
- integrations: batch/job only. ModelForge's attempts are batch/v1 Jobs labelled with the queue (docs/operator.md).

The binary, CRDs and webhook manifest are cached by version beside the control plane's
(``$MODELFORGE_CACHE/kueue/<version>``); the process is recorded in the control plane's state file, so
`make cluster-down` stops it too. Measured build times: docs/benchmarks.md ("Kueue").
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import controlplane as cp

KUEUE_VERSION = "v0.17.0"  # its k8s.io modules are v0.35; the API it uses is served by v1.36 unchanged
KUEUE_WEBHOOK_PORT = cp.APISERVER_PORT - 7000  # 9443 by default, controller-runtime's usual webhook port
KUEUE_HEALTH_PORT = cp.APISERVER_PORT - 6998
METRICS_CERTS = Path("/etc/kueue/metrics/certs")  # fixed in cmd/kueue/main.go v0.17.0
WEBHOOKS = ("mjob.kb.io", "vjob.kb.io", "mclusterqueue.kb.io", "vclusterqueue.kb.io", "vcohort.kb.io",
            "mresourceflavor.kb.io", "vresourceflavor.kb.io", "mworkload.kb.io", "vworkload.kb.io")  # fmt: skip
WEBHOOK_CONFIGS = {"mutating-webhook-configuration": "modelforge-kueue-mutating",
                   "validating-webhook-configuration": "modelforge-kueue-validating"}  # fmt: skip
CONFIG = """\
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
manageJobsWithoutQueueName: false
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: false
webhook:
  host: 127.0.0.1
  port: %(webhook_port)d
  certDir: %(cert_dir)s
health:
  healthProbeBindAddress: 127.0.0.1:%(health_port)d
metrics:
  bindAddress: "0"
integrations:
  frameworks: ["batch/job"]
featureGates:
  VisibilityOnDemand: false
"""


def _log(msg: str) -> None:
    print(f"[kueue] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return cp.cache_root() / "kueue" / KUEUE_VERSION


def binary() -> Path:
    return cache_dir() / "bin" / "kueue"


def build() -> Path:
    """The manager binary, its CRDs and webhook manifest from the module (a no-op when cached)."""
    dest = cache_dir()
    if binary().exists() and (dest / "crds").is_dir() and (dest / "webhooks.yaml").exists():
        return dest
    env = cp._go_env()
    t0 = time.monotonic()
    _log(f"building kueue {KUEUE_VERSION} from sigs.k8s.io/kueue (Go module proxy) ...")
    with tempfile.TemporaryDirectory(prefix="modelforge-kueue-build-") as tmp:
        work = Path(tmp)
        genv = dict(env, GOBIN=str(work / "gobin"))
        cp._run(["go", "install", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kueue/cmd/kueue@{KUEUE_VERSION}"],
                env=genv)  # fmt: skip
        module = Path(json.loads(cp._run(["go", "mod", "download", "-json", f"sigs.k8s.io/kueue@{KUEUE_VERSION}"],
                                         env=env))["Dir"])  # fmt: skip
        stage = work / "stage"
        (stage / "bin").mkdir(parents=True)
        shutil.move(str(work / "gobin" / "kueue"), stage / "bin" / "kueue")
        shutil.copytree(module / "config" / "components" / "crd" / "bases", stage / "crds")
        shutil.copy(module / "config" / "components" / "webhook" / "manifests.yaml", stage / "webhooks.yaml")
        for path in stage.rglob("*"):  # the module cache is read-only; the cache copy need not be
            path.chmod(0o755 if path.is_dir() or path.name == "kueue" else 0o644)
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(stage), dest)
    _log(f"built kueue {KUEUE_VERSION} in {time.monotonic() - t0:.0f} s into {dest}")
    return dest


def run_dir() -> Path:
    return cp.run_dir() / "kueue"


def _pki() -> Path:
    """The webhook server's certificate, signed by the control plane's CA for 127.0.0.1."""
    pki = cp.run_dir() / "pki"
    certs = run_dir() / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    if not (pki / "kueue-webhook.crt").exists():
        cp._sign(pki, "kueue-webhook", "/CN=kueue-webhook", "subjectAltName=IP:127.0.0.1")
    shutil.copy(pki / "kueue-webhook.crt", certs / "tls.crt")
    shutil.copy(pki / "kueue-webhook.key", certs / "tls.key")
    METRICS_CERTS.mkdir(parents=True, exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        if not (METRICS_CERTS / name).exists():
            shutil.copy(certs / name, METRICS_CERTS / name)
    return certs


def webhook_configurations(manifest: str, ca_pem: bytes) -> list[dict[str, Any]]:
    """The module's webhook configurations, only WEBHOOKS kept, each pointed at the local server."""
    import yaml

    out = []
    for doc in yaml.safe_load_all(manifest):
        if not doc:
            continue
        kept = [w for w in doc.get("webhooks") or [] if w["name"] in WEBHOOKS]
        for hook in kept:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{KUEUE_WEBHOOK_PORT}{path}",
                                    "caBundle": base64.b64encode(ca_pem).decode()}  # fmt: skip
            hook["timeoutSeconds"] = 10
        doc["metadata"] = {"name": WEBHOOK_CONFIGS[doc["metadata"]["name"]],
                           "labels": {"app.kubernetes.io/managed-by": "modelforge-tests"}}  # fmt: skip
        doc["webhooks"] = kept
        out.append(doc)
    return out


def _healthy() -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{KUEUE_HEALTH_PORT}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _webhook_answers() -> bool:
    """A dry-run create through the mutating webhook: the API server reaches Kueue's webhook server."""
    flavor = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "probe"}}
    try:
        cp._kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(flavor))
        return True
    except SystemExit:
        return False


def up() -> None:
    """Kueue on the running control plane: CRDs (server-side apply), the manager, then its webhooks."""
    if not cp.status_quiet():
        raise SystemExit("[kueue] the local control plane is not running: `make cluster` first")
    dest = build()
    state = cp._read_state()
    if "kueue" in state and cp._alive(state["kueue"]) and _healthy() and _webhook_answers():
        _log("already up")
        return
    if "kueue" in state:
        _stop(state)
    t0 = time.monotonic()
    cp._kubectl("apply", "--server-side", "--force-conflicts", "-f", str(dest / "crds"))
    cp._kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(dest / "crds"))
    certs = _pki()
    config = run_dir() / "config.yaml"
    config.write_text(CONFIG % {"webhook_port": KUEUE_WEBHOOK_PORT, "cert_dir": certs,
                                "health_port": KUEUE_HEALTH_PORT})  # fmt: skip
    cp._start("kueue", [str(binary()), f"--config={config}", f"--kubeconfig={cp.kubeconfig_path()}",
                        "--zap-log-level=info"], state)  # fmt: skip
    cp._wait("kueue's readiness probe", _healthy, 60, state, "kueue")
    ca = (cp.run_dir() / "pki" / "ca.crt").read_bytes()
    for doc in webhook_configurations((dest / "webhooks.yaml").read_text(), ca):
        cp._kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(doc))
    cp._wait("kueue's webhooks to answer the API server", _webhook_answers, 60, state, "kueue")
    _log(f"up in {time.monotonic() - t0:.1f} s (webhooks on 127.0.0.1:{KUEUE_WEBHOOK_PORT}, pid "
         f"{state['kueue']['pid']}, log {cp.run_dir() / 'logs' / 'kueue.log'})")  # fmt: skip


def _stop(state: dict[str, dict[str, object]]) -> None:
    entry = state.pop("kueue")
    pid = int(entry["pid"])  # type: ignore[arg-type]
    if cp._alive(entry):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while cp._alive(entry) and time.monotonic() < deadline:
            time.sleep(0.1)
        if cp._alive(entry):
            os.killpg(pid, signal.SIGKILL)
        _log(f"stopped kueue (pid {pid})")
    cp._state_file().write_text(json.dumps(state, indent=1))


def down() -> None:
    """Webhooks first (a Job create must never wait on a stopped Kueue), then the manager. Kueue's finalizers
    on what is left (Workloads, ClusterQueues, ResourceFlavors) are removed so namespaces can go."""
    if cp.status_quiet():
        for name in WEBHOOK_CONFIGS.values():
            kind = "mutatingwebhookconfiguration" if "mutating" in name else "validatingwebhookconfiguration"
            cp._kubectl("delete", kind, name, "--ignore-not-found")
    state = cp._read_state()
    if "kueue" in state:
        _stop(state)
    if cp.status_quiet():
        release_finalizers()


def release_finalizers() -> None:
    """Kueue removes its own finalizers while it runs; with it stopped, objects left would block their
    namespace's deletion (and a ClusterQueue its own) forever."""
    for kind in ("workloads.kueue.x-k8s.io", "clusterqueues.kueue.x-k8s.io", "resourceflavors.kueue.x-k8s.io",
                 "localqueues.kueue.x-k8s.io"):  # fmt: skip
        try:
            listed = json.loads(cp._kubectl("get", kind, "-A", "-o", "json"))
        except SystemExit:
            continue  # the CRDs are not installed
        for item in listed.get("items", []):
            if item["metadata"].get("finalizers"):
                where = ["-n", item["metadata"]["namespace"]] if item["metadata"].get("namespace") else []
                with contextlib.suppress(SystemExit):  # gone meanwhile
                    cp._kubectl("patch", kind, item["metadata"]["name"], *where, "--type=merge",
                                "-p", '{"metadata":{"finalizers":null}}')  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kueue", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "up", "down"])
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build())
    elif args.command == "up":
        up()
    else:
        down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
