"""A real local Kubernetes control plane for the operator's test tier, built from Go modules.

    python -m tests.cluster.controlplane build    # compile etcd, kube-apiserver, -controller-manager, -scheduler, kwok
    python -m tests.cluster.controlplane up       # start them on 127.0.0.1, write the kubeconfig, create GPU nodes
    python -m tests.cluster.controlplane status   # what runs, by PID, and whether the API answers
    python -m tests.cluster.controlplane down     # stop exactly the processes `up` started (by PID, process group)

Everything real except container execution: etcd, kube-apiserver (certificates, service-account tokens,
Node,RBAC authorization, the default admission plugins), kube-controller-manager (Job, Deployment,
ReplicaSet, garbage collector, ...), kube-scheduler, and kwok, which plays the kubelet of fake GPU nodes
and gives pods addresses in 127.0.0.0/8 (never another range: the operator dials pod IPs). See
docs/development.md.

Binaries live in a cache outside the clone keyed by the versions
(``$MODELFORGE_CACHE`` or ``~/.cache/modelforge``; ``cluster/<versions>/bin``), so a second build is a no-op.
The running cluster's state lives in ``$MODELFORGE_CLUSTER_DIR`` (default ``~/.cache/modelforge/cluster/run``).
Only the standard library is used, so this runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
STAGING_VERSION = "v0.36.3"  # the published staging modules (k8s.io/api, client-go, ...) of that release
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# kwok's Logs CRD, from its module at KWOK_VERSION (tests/data/kwok/README.md)
KWOK_LOGS_CRD = Path(__file__).resolve().parents[1] / "data" / "kwok" / "kwok.x-k8s.io_logs.yaml"


def cache_root() -> Path:
    return Path(os.environ.get("MODELFORGE_CACHE", Path.home() / ".cache" / "modelforge"))


def versions_key() -> str:
    return f"k8s-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}"


def bin_dir() -> Path:
    return cache_root() / "cluster" / versions_key() / "bin"


def _log(msg: str) -> None:
    print(f"[cluster] {msg}", flush=True)


def _run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"[cluster] command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
        )
    return proc.stdout


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")
    env.pop("GOFLAGS", None)
    return env


def _kubernetes_replaces(env: dict[str, str]) -> list[str]:
    """k8s.io/kubernetes' go.mod replaces every staging module with ./staging/...; map them to published versions."""
    info = json.loads(_run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"], env=env))
    gomod = Path(info["GoMod"]).read_text()
    mods = []
    for line in gomod.splitlines():
        line = line.strip().removeprefix("replace").strip()
        if "=> ./staging/" in line:
            mods.append(line.split("=>")[0].split()[0])
    if not mods:
        raise SystemExit("[cluster] found no staging replace lines in k8s.io/kubernetes' go.mod")
    return mods


def _build_kubernetes(dest: Path, work: Path, env: dict[str, str], commands: tuple[str, ...] = KUBE_COMMANDS) -> None:
    """k8s.io/kubernetes' `commands` (cmd/<name>) at KUBERNETES_VERSION into `dest` (the kind tier builds the
    node's kubelet, kubeadm, kubectl and kube-proxy with it too: tests/e2e/kindcluster.py)."""
    mod = work / "kube"
    mod.mkdir()
    replaces = _kubernetes_replaces(env)
    lines = [
        "module modelforge.local/kubebuild",
        "",
        "go 1.26",
        "",
        f"require k8s.io/kubernetes {KUBERNETES_VERSION}",
        "",
    ]
    lines += [f"replace {m} => {m} {STAGING_VERSION}" for m in replaces]
    (mod / "go.mod").write_text("\n".join(lines) + "\n")
    pkgs = [f"k8s.io/kubernetes/cmd/{c}" for c in commands]
    _log(f"resolving k8s.io/kubernetes {KUBERNETES_VERSION} with {len(replaces)} staging modules at {STAGING_VERSION}")
    _run(["go", "get", *[f"{p}@{KUBERNETES_VERSION}" for p in pkgs]], cwd=mod, env=env)
    ldflags = (
        f"-s -w -X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}"
        f" -X k8s.io/client-go/pkg/version.gitVersion={KUBERNETES_VERSION}"
        " -X k8s.io/component-base/version.gitTreeState=clean"
    )
    for cmd in commands:
        t0 = time.monotonic()
        _log(f"building {cmd} {KUBERNETES_VERSION} ...")
        _run(
            [
                "go",
                "build",
                "-trimpath",
                "-tags",
                "selinux,notest,grpcnotrace",
                "-ldflags",
                ldflags,
                "-o",
                str(dest / cmd),
                f"k8s.io/kubernetes/cmd/{cmd}",
            ],
            cwd=mod,
            env=env,
        )
        _log(f"built {cmd} in {time.monotonic() - t0:.0f} s")


def _build_etcd(dest: Path, work: Path, env: dict[str, str]) -> None:
    mod = work / "etcd"
    mod.mkdir()
    (mod / "go.mod").write_text("module modelforge.local/etcdbuild\n\ngo 1.26\n")
    t0 = time.monotonic()
    _log(f"building etcd {ETCD_VERSION} ...")
    _run(["go", "get", f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}"], cwd=mod, env=env)
    _run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(dest / "etcd"), "go.etcd.io/etcd/server/v3"],
        cwd=mod,
        env=env,
    )
    _log(f"built etcd in {time.monotonic() - t0:.0f} s")


def _build_kwok(dest: Path, work: Path, env: dict[str, str]) -> None:
    t0 = time.monotonic()
    _log(f"building kwok {KWOK_VERSION} ...")
    genv = dict(env, GOBIN=str(work / "gobin"))
    _run(["go", "install", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"], env=genv)
    shutil.move(str(work / "gobin" / "kwok"), dest / "kwok")
    _log(f"built kwok in {time.monotonic() - t0:.0f} s")


ALL_BINARIES = ("etcd", *KUBE_COMMANDS, "kwok")


def build() -> Path:
    dest = bin_dir()
    missing = [b for b in ALL_BINARIES if not (dest / b).exists()]
    if not missing:
        _log(f"binaries up to date in {dest} (nothing to build)")
        return dest
    if shutil.which("go") is None:
        raise SystemExit("[cluster] `go` is not on PATH: the control plane is built from Go modules (Go 1.26+)")
    dest.mkdir(parents=True, exist_ok=True)
    env = _go_env()
    t0 = time.monotonic()
    _log(f"cold build of {', '.join(missing)} into {dest} (measured: ~6 min on 2 cores with an empty Go module cache)")
    with tempfile.TemporaryDirectory(prefix="modelforge-cluster-build-") as tmp:
        work = Path(tmp)
        # Each binary is written under a temporary name first, so an interrupted build never leaves a partial one.
        stage = work / "out"
        stage.mkdir()
        if "etcd" in missing:
            _build_etcd(stage, work, env)
        if "kwok" in missing:
            _build_kwok(stage, work, env)
        if any(c in missing for c in KUBE_COMMANDS):
            _build_kubernetes(stage, work, env)
        for b in missing:
            if (stage / b).exists():
                shutil.move(str(stage / b), dest / b)
    _log(f"cold build finished in {time.monotonic() - t0:.0f} s")
    return dest


# ---------------------------------------------------------------------------------------------- up / down

APISERVER_PORT = int(os.environ.get("MODELFORGE_CLUSTER_PORT", "16443"))
ETCD_CLIENT_PORT = APISERVER_PORT - 4064  # 12379 by default
ETCD_PEER_PORT = ETCD_CLIENT_PORT + 1
# Addresses: everything in 127.0.0.0/8. Every node's InternalIP is kwok's 127.0.10.250: one kwok process
# is the kubelet of all of them, and its server (pods/log, proxied by the API server) listens there on
# KUBELET_PORT. Each node's pods come from its own spec.podCIDR 127.<20+n>.0.0/24 (kwok's PodIPWith takes
# the node's podCIDR); kwok's fallback CIDR is 127.19.0.0/24. Services get cluster IPs from
# 127.96.0.0/16; no test dials them.
LOOPBACK = "127.0.0.0/8"
KUBELET_IP = "127.0.10.250"
KUBELET_PORT = APISERVER_PORT - 6193  # 10250 by default, a kubelet's port
SERVICE_CIDR = "127.96.0.0/16"
KWOK_FALLBACK_CIDR = "127.19.0.0/24"

# The fake GPU nodes: two 8-GPU nodes shaped like an 8xH100 box and one smaller node.
NODES: tuple[dict[str, object], ...] = (
    {"name": "gpu-node-0", "gpus": 8, "cpu": "192", "memory": "2Ti", "product": "NVIDIA-H100-80GB-HBM3"},
    {"name": "gpu-node-1", "gpus": 8, "cpu": "192", "memory": "2Ti", "product": "NVIDIA-H100-80GB-HBM3"},
    {"name": "gpu-node-small", "gpus": 2, "cpu": "32", "memory": "256Gi", "product": "NVIDIA-L40S"},
)


def run_dir() -> Path:
    return Path(os.environ.get("MODELFORGE_CLUSTER_DIR", cache_root() / "cluster" / "run"))


def kubeconfig_path() -> Path:
    return run_dir() / "kubeconfig"


def _state_file() -> Path:
    return run_dir() / "state.json"


# kwok's stages (its Stage API), written for this tier. Without any stage kwok v0.8 refuses to start.
# Nodes: initialize to Ready (the capacity we set is kept), kwok renews their Leases. Pods: scheduled ->
# Running + Ready with a podIP from the node's podCIDR; deleted -> stopped (Failed, exit 143, as a kubelet
# reports a container ended by SIGTERM: the Job controller keeps its finalizer on a deleted pod until the pod
# is terminal, since the Jobs have a podFailurePolicy) -> gone. There is deliberately NO
# "complete" stage: a training pod runs until the test plays the kubelet and reports its exit
# (tests/cluster/kube.py: `finish_pod`), exactly as a real container would end.
KWOK_CONFIG = """\
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  cidr: "%(cidr)s"
  nodeIP: "%(kubelet_ip)s"
  nodePort: %(kubelet_port)d
  manageNodesWithAnnotationSelector: "kwok.x-k8s.io/node=fake"
  nodeLeaseDurationSeconds: 40
  # A config file skips kwok's defaulting of these: without them it refuses to start.
  nodeLeaseParallelism: 4
  podPlayStageParallelism: 4
  nodePlayStageParallelism: 4
  podsOnNodeSyncParallelism: 1
  # The kubelet API's pods/log (served from `Logs` objects); no profiling endpoints.
  enableDebuggingHandlers: true
  enableProfilingHandler: false
  enableContentionProfiling: false
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}
      addresses:
      {{ YAML .status.addresses 1 }}
      allocatable:
      {{ YAML .status.allocatable 1 }}
      capacity:
      {{ YAML .status.capacity 1 }}
      daemonEndpoints:
        kubeletEndpoint:
          Port: {{ NodePort }}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: "kwok-{{ Version }}"
        kubeProxyVersion: "kwok-{{ Version }}"
        containerRuntimeVersion: "kwok-{{ Version }}"
        kernelVersion: "kwok-{{ Version }}"
        osImage: "kwok"
        bootID: ""
        machineID: ""
        systemUUID: ""
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.podIP'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'NotIn'
      values: ['Succeeded', 'Failed']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: PodReadyToStartContainers
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: ContainersReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      {{ $ip := PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" )
           ( or .metadata.namespace "" ) }}
      podIP: {{ $ip | Quote }}
      phase: Running
      startTime: {{ $now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-stop
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
    - key: '.status.phase'
      operator: 'NotIn'
      values: ['Succeeded', 'Failed']
  next:
    statusTemplate: |
      {{ $now := Now }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        started: false
        restartCount: 0
        state:
          running: null
          terminated:
            exitCode: 143
            reason: Error
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      phase: Failed
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
    - key: '.status.phase'
      operator: 'In'
      values: ['Succeeded', 'Failed']
  next:
    delete: true
"""


# The API server's audit log records every request the operator makes (the ServiceAccounts of the release
# namespaces the tests and benchmarks use), so request counts are measured, not estimated.
AUDITED_GROUPS = ("system:serviceaccounts:modelforge-system", "system:serviceaccounts:team-system")
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "userGroups": list(AUDITED_GROUPS)}, {"level": "None"}],
}


def audit_log_path() -> Path:
    return run_dir() / "logs" / "audit.jsonl"


def _openssl(*args: str) -> None:
    _run(["openssl", *args])


def _ensure_pki(pki: Path) -> None:
    """A CA, the API server's serving cert, a client cert per component, and the service-account key."""
    if (pki / "done").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-subj",
        "/CN=modelforge-local-ca",
        "-keyout",
        str(pki / "ca.key"),
        "-out",
        str(pki / "ca.crt"),
    )
    sans = (
        "subjectAltName=IP:127.0.0.1,IP:127.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    )
    certs = {
        "apiserver": ("/CN=kube-apiserver", sans),
        "admin": ("/O=system:masters/CN=modelforge-admin", None),
        "controller-manager": ("/CN=system:kube-controller-manager", None),
        "scheduler": ("/CN=system:kube-scheduler", None),
        "kwok": ("/O=system:masters/CN=kwok-controller", None),  # plays the kubelet of every fake node
        "apiserver-kubelet-client": ("/O=system:masters/CN=kube-apiserver-kubelet-client", None),
    }
    for name, (subject, ext) in certs.items():
        _sign(pki, name, subject, ext)
    _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    (pki / "done").write_text("ok\n")


def _ensure_kubelet_cert(pki: Path) -> None:
    """kwok's serving certificate (the API server dials it for pods/log and verifies it with the CA). Signed
    again when missing (a PKI made before kwok served anything) or not signed by this CA."""
    cert = pki / "kubelet-serving.crt"
    verified = (
        cert.exists()
        and subprocess.run(
            ["openssl", "verify", "-CAfile", str(pki / "ca.crt"), str(cert)], capture_output=True, check=False
        ).returncode
        == 0
    )
    if not verified:
        _sign(pki, "kubelet-serving", "/O=system:nodes/CN=system:node:kwok", f"subjectAltName=IP:{KUBELET_IP}")


def _sign(pki: Path, name: str, subject: str, ext: str | None) -> None:
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        subject,
        "-keyout",
        str(pki / f"{name}.key"),
        "-out",
        str(pki / f"{name}.csr"),
    )
    extra = ["-extfile", str(pki / "san.cnf")] if ext else []
    if ext:
        (pki / "san.cnf").write_text(ext + "\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(pki / f"{name}.csr"),
        "-CA",
        str(pki / "ca.crt"),
        "-CAkey",
        str(pki / "ca.key"),
        "-CAcreateserial",
        "-days",
        "3650",
        "-out",
        str(pki / f"{name}.crt"),
        *extra,
    )


def _kubeconfig(pki: Path, user: str) -> str:
    server = f"https://127.0.0.1:{APISERVER_PORT}"
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "modelforge-local",
            "clusters": [
                {
                    "name": "modelforge-local",
                    "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate": str(pki / f"{user}.crt"), "client-key": str(pki / f"{user}.key")},
                }
            ],
            "contexts": [{"name": "modelforge-local", "context": {"cluster": "modelforge-local", "user": user}}],
        },
        indent=1,
    )


def _proc_start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(entry: dict[str, object]) -> bool:
    pid = int(entry["pid"])  # type: ignore[arg-type]
    return _proc_start_time(pid) == entry["start"]


def _read_state() -> dict[str, dict[str, object]]:
    try:
        return json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return {}


_STARTED: list[subprocess.Popen[bytes]] = []


def _start(name: str, argv: list[str], state: dict[str, dict[str, object]]) -> None:
    logs = run_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 (the child keeps writing after we return)
    # Its own session (process group), so `down` stops it and only it, by PID.
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    log.close()
    _STARTED.append(proc)  # they outlive this call by design: keep the handle (no "still running" warning)
    state[name] = {"pid": proc.pid, "start": _proc_start_time(proc.pid) or "", "argv": argv}
    _state_file().write_text(json.dumps(state, indent=1))


def _https_get(path: str, pki: Path, timeout: float = 2.0) -> tuple[int, str]:
    import ssl
    import urllib.error
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{APISERVER_PORT}{path}", context=ctx, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def _wait(what: str, check, timeout: float, state: dict[str, dict[str, object]], proc: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc and not _alive(state[proc]):
            tail = (run_dir() / "logs" / f"{proc}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"[cluster] {proc} exited while waiting for {what}; its log ends:\n{tail}")
        time.sleep(0.25)
    raise SystemExit(f"[cluster] timed out after {timeout:.0f} s waiting for {what} (logs in {run_dir() / 'logs'})")


def _kubectl(*args: str, stdin: str | None = None) -> str:
    kubectl = shutil.which("kubectl") or str(Path(__file__).resolve().parents[2] / ".tools" / "bin" / "kubectl")
    proc = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig_path()), *args], input=stdin, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"[cluster] kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def node_manifest(node: dict[str, object], index: int) -> dict[str, object]:
    name = str(node["name"])
    resources = {
        "cpu": node["cpu"],
        "memory": node["memory"],
        "pods": "110",
        "ephemeral-storage": "2Ti",
        "nvidia.com/gpu": str(node["gpus"]),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": node["product"],
                "nvidia.com/gpu.count": str(node["gpus"]),
            },
        },
        "spec": {"podCIDR": f"127.{20 + index}.0.0/24", "podCIDRs": [f"127.{20 + index}.0.0/24"]},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
            "addresses": [
                {"type": "InternalIP", "address": KUBELET_IP},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def up() -> None:
    bins = build()
    run_dir().mkdir(parents=True, exist_ok=True)
    state = _read_state()
    pki = run_dir() / "pki"
    same = _fingerprint_file().exists() and _fingerprint_file().read_text() == _fingerprint()
    if state and all(_alive(e) for e in state.values()) and not same:
        _log("the control plane's setup changed since it started (tests/cluster/controlplane.py): restarting it")
        down()
        state = {}
    if state and all(_alive(e) for e in state.values()):
        # Every process runs: a busy API server may answer slowly, never wipe a healthy cluster for that.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _https_get("/readyz", pki, timeout=5)[0] == 200:
                _log(f"already up: KUBECONFIG={kubeconfig_path()}")
                return
            time.sleep(1)
    if state:
        _log("a previous cluster is partly running: stopping it first")
        down()
        state = {}
    t0 = time.monotonic()
    _ensure_pki(pki)
    _ensure_kubelet_cert(pki)
    for user in ("admin", "controller-manager", "scheduler", "kwok"):
        (run_dir() / f"{user}.kubeconfig").write_text(_kubeconfig(pki, user))
    kubeconfig_path().write_text(_kubeconfig(pki, "admin"))
    (run_dir() / "audit-policy.json").write_text(json.dumps(AUDIT_POLICY))
    (run_dir() / "logs").mkdir(parents=True, exist_ok=True)
    data = run_dir() / "etcd-data"
    shutil.rmtree(data, ignore_errors=True)
    etcd_client = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"
    peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
    _start(
        "etcd",
        [
            str(bins / "etcd"),
            "--name",
            "modelforge",
            "--data-dir",
            str(data),
            "--listen-client-urls",
            etcd_client,
            "--advertise-client-urls",
            etcd_client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"modelforge={peer}",
            "--unsafe-no-fsync",
            "--listen-metrics-urls",
            "",
            "--log-level",
            "warn",
        ],
        state,
    )
    _start(
        "kube-apiserver",
        [
            str(bins / "kube-apiserver"),
            f"--etcd-servers={etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={APISERVER_PORT}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",  # added to the default set (PodSecurity, ResourceQuota, ...)
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=false",
            "--profiling=false",
            "--v=1",
            f"--cert-dir={pki}",
            f"--audit-policy-file={run_dir() / 'audit-policy.json'}",
            f"--audit-log-path={audit_log_path()}",
            "--audit-log-maxsize=500",
            "--audit-log-maxbackup=1",
            "--audit-log-mode=batch",
            "--audit-log-batch-max-wait=1s",
        ],
        state,
    )
    _wait("the API server (/readyz)", lambda: _https_get("/readyz", pki)[0] == 200, 90, state, "kube-apiserver")
    _log(f"API server ready after {time.monotonic() - t0:.1f} s")
    _start(
        "kube-controller-manager",
        [
            str(bins / "kube-controller-manager"),
            f"--kubeconfig={run_dir() / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={run_dir() / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={run_dir() / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allocate-node-cidrs=false",
            "--controllers=*",
            "--v=1",
        ],
        state,
    )
    _start(
        "kube-scheduler",
        [
            str(bins / "kube-scheduler"),
            f"--kubeconfig={run_dir() / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={run_dir() / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={run_dir() / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--v=1",
        ],
        state,
    )
    kwok_config = run_dir() / "kwok.yaml"
    kwok_config.write_text(
        KWOK_CONFIG % {"cidr": KWOK_FALLBACK_CIDR, "kubelet_ip": KUBELET_IP, "kubelet_port": KUBELET_PORT}
    )
    # kwok watches its Logs objects (tests/data/kwok): the kind must exist before it starts.
    _kubectl("apply", "--server-side", "--field-manager=modelforge-cluster", "-f", str(KWOK_LOGS_CRD))
    _kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/logs.kwok.x-k8s.io")
    _start(
        "kwok",
        [
            str(bins / "kwok"),
            f"--kubeconfig={run_dir() / 'kwok.kubeconfig'}",
            f"--config={kwok_config}",
            # The kubelet API of every fake node (pods/log from `Logs` objects; see tests/cluster/kube.py)
            f"--server-address={KUBELET_IP}:{KUBELET_PORT}",
            f"--tls-cert-file={pki / 'kubelet-serving.crt'}",
            f"--tls-private-key-file={pki / 'kubelet-serving.key'}",
            "--enable-crds=Logs",
        ],
        state,
    )
    for index, node in enumerate(NODES):
        _kubectl(
            "apply",
            "--server-side",
            "--field-manager=modelforge-cluster",
            "-f",
            "-",
            stdin=json.dumps(node_manifest(node, index)),
        )

    def nodes_ready() -> bool:
        items = json.loads(_kubectl("get", "nodes", "-o", "json"))["items"]
        ready = [
            n
            for n in items
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
        ]
        return len(ready) == len(NODES)

    _wait("the kwok nodes to be Ready", nodes_ready, 60, state, "kwok")

    def default_sa() -> bool:
        return _https_get("/api/v1/namespaces/default/serviceaccounts/default", pki)[0] == 200

    _wait("the default ServiceAccount", default_sa, 60, state, "kube-controller-manager")
    check_loopback()
    _fingerprint_file().write_text(_fingerprint())
    _log(f"up in {time.monotonic() - t0:.1f} s: export KUBECONFIG={kubeconfig_path()}")


def _fingerprint_file() -> Path:
    return run_dir() / "fingerprint"


SETUP_REVISION = 2  # bump when up()'s flags change in a way a running control plane must not be reused for


def _fingerprint() -> str:
    """What a running control plane was started from: the versions, kwok's configuration and CRD, the
    nodes, the addresses and SETUP_REVISION. One started from others is restarted by `up`, not reused
    (a comment or a test edited elsewhere changes none of these)."""
    import hashlib

    setup = json.dumps([SETUP_REVISION, versions_key(), KWOK_CONFIG, NODES, KUBELET_IP, KUBELET_PORT, SERVICE_CIDR,
                        AUDIT_POLICY], sort_keys=True, default=str)  # fmt: skip
    return hashlib.sha256(setup.encode() + KWOK_LOGS_CRD.read_bytes()).hexdigest()[:16]


def check_loopback() -> None:
    """Fail loudly if any node or pod has an address outside 127.0.0.0/8 (the operator dials pod IPs)."""
    import ipaddress

    net = ipaddress.ip_network(LOOPBACK)
    bad = []
    nodes = json.loads(_kubectl("get", "nodes", "-o", "json"))["items"]
    for node in nodes:
        for addr in node.get("status", {}).get("addresses", []):
            if addr["type"].endswith("IP") and ipaddress.ip_address(addr["address"]) not in net:
                bad.append(f"node {node['metadata']['name']}: {addr['address']}")
    pods = json.loads(_kubectl("get", "pods", "-A", "-o", "json"))["items"]
    for pod in pods:
        status = pod.get("status", {})
        for ip in [status.get("podIP"), status.get("hostIP"), *[p.get("ip") for p in status.get("podIPs") or []]]:
            if ip and ipaddress.ip_address(ip) not in net:
                bad.append(f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']}: {ip}")
    if bad:
        raise SystemExit("[cluster] addresses outside 127.0.0.0/8 (no test may send traffic there): " + ", ".join(bad))


def down() -> None:
    import signal

    state = _read_state()
    if not state:
        _log("nothing to stop")
        return
    for name in reversed(list(state)):
        entry = state[name]
        pid = int(entry["pid"])  # type: ignore[arg-type]
        if not _alive(entry):
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 15
        while _alive(entry) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(entry):
            os.killpg(pid, signal.SIGKILL)
        _log(f"stopped {name} (pid {pid})")
    _state_file().unlink(missing_ok=True)
    _fingerprint_file().unlink(missing_ok=True)
    shutil.rmtree(run_dir() / "etcd-data", ignore_errors=True)


def status_quiet() -> bool:
    """True when a control plane started by `up` is running and ready."""
    state = _read_state()
    if not state or not all(_alive(e) for e in state.values()):
        return False
    return _https_get("/readyz", run_dir() / "pki", timeout=10)[0] == 200


def status() -> int:
    state = _read_state()
    if not state:
        print("not running")
        return 1
    ok = True
    for name, entry in state.items():
        alive = _alive(entry)
        ok &= alive
        print(f"{name:26} pid {entry['pid']:<8} {'running' if alive else 'STOPPED'}")
    code, _ = _https_get("/readyz", run_dir() / "pki")
    print(f"API server https://127.0.0.1:{APISERVER_PORT}: {'ready' if code == 200 else f'not ready ({code})'}")
    print(f"KUBECONFIG={kubeconfig_path()}")
    return 0 if ok and code == 200 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cluster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["build", "up", "down", "status", "kubeconfig"])
    args = parser.parse_args(argv)
    if args.command == "build":
        build()
    elif args.command == "up":
        up()
    elif args.command == "down":
        down()
    elif args.command == "status":
        return status()
    else:
        print(kubeconfig_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
