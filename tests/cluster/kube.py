"""Test-side access to the local control plane: the admin's client, waiting on the API, playing the kubelet.

Tests assert through the API (objects, status, conditions, events). `wait_for` polls the API until a
predicate holds and fails with the last thing it saw; it never stands in for an assertion.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
HELM = ROOT / ".tools" / "bin" / "helm"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

# kind -> (apiVersion, plural, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "FineTuneJob": ("modelforge.io/v1alpha1", "finetunejobs", True),
    "ModelServe": ("modelforge.io/v1alpha1", "modelserves", True),
    "Pod": ("v1", "pods", True),
    "Service": ("v1", "services", True),
    "ConfigMap": ("v1", "configmaps", True),
    "Event": ("v1", "events", True),
    "ResourceQuota": ("v1", "resourcequotas", True),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims", True),
    "PersistentVolume": ("v1", "persistentvolumes", False),
    "Namespace": ("v1", "namespaces", False),
    "Node": ("v1", "nodes", False),
    "Secret": ("v1", "secrets", True),
    "Job": ("batch/v1", "jobs", True),
    "Deployment": ("apps/v1", "deployments", True),
    "ReplicaSet": ("apps/v1", "replicasets", True),
    "RayJob": ("ray.io/v1", "rayjobs", True),  # KubeRay's CRD, installed by the session (conftest.py)
    "CustomResourceDefinition": ("apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "Logs": ("kwok.x-k8s.io/v1alpha1", "logs", True),  # kwok's: which file is a pod's container log
}
# Kueue's, installed with the real Kueue (tests/cluster/kueue.py) for tests/cluster/test_kueue.py only.
KUEUE_KINDS: dict[str, tuple[str, str, bool]] = {
    "ResourceFlavor": ("kueue.x-k8s.io/v1beta2", "resourceflavors", False),
    "ClusterQueue": ("kueue.x-k8s.io/v1beta2", "clusterqueues", False),
    "LocalQueue": ("kueue.x-k8s.io/v1beta2", "localqueues", True),
    "WorkloadPriorityClass": ("kueue.x-k8s.io/v1beta2", "workloadpriorityclasses", False),
    "Workload": ("kueue.x-k8s.io/v1beta2", "workloads", True),
}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _path(kind: str, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    api_version, plural, namespaced = KINDS[kind] if kind in KINDS else KUEUE_KINDS[kind]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = base + (f"/namespaces/{namespace}" if namespaced and namespace else "") + f"/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


class Kube:
    """The cluster admin's view: plain dicts in, plain dicts out (camelCase, as the API server speaks)."""

    def __init__(self, kubeconfig: Path):
        self.kubeconfig = kubeconfig
        self.client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))

    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
                content_type: str = "application/json") -> Any:  # fmt: skip
        params = self.client.param_serialize(
            method, path, query_params=list((query or {}).items()), body=body,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )  # fmt: skip
        response = self.client.call_api(*params, _request_timeout=30)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return json.loads(response.data) if response.data else None

    def create(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        ns = obj.get("metadata", {}).get("namespace")
        return self.request("POST", _path(obj["kind"], ns), obj, {"dryRun": "All"} if dry_run else None)

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", _path(kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None,
             fields: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
        query = {}
        if labels:
            query["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        if fields:
            query["fieldSelector"] = fields
        return self.request("GET", _path(kind, namespace), query=query)["items"]

    def patch(self, kind: str, namespace: str | None, name: str, body: dict[str, Any],
              subresource: str | None = None) -> dict[str, Any]:  # fmt: skip
        return self.request("PATCH", _path(kind, namespace, name, subresource), body,
                            content_type="application/merge-patch+json")  # fmt: skip

    def delete(self, kind: str, namespace: str | None, name: str, propagation: str = "Background") -> None:
        try:
            self.request("DELETE", _path(kind, namespace, name), {"propagationPolicy": propagation})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def events(self, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
        return self.list("Event", namespace, fields=f"involvedObject.name={name}" if name else None)

    # --------------------------------------------------------------------------- the kubelet's part

    def finish_pod(self, namespace: str, name: str, exit_code: int, reason: str | None = None,
                   message: str | dict[str, Any] = "") -> None:  # fmt: skip
        """What a kubelet reports when the container exits: phase, terminated state, termination message."""
        pod = self.get("Pod", namespace, name)
        assert pod is not None, f"pod {namespace}/{name} does not exist"
        text = json.dumps(message) if isinstance(message, dict) else message
        statuses = [{
            "name": c["name"], "image": c["image"], "ready": False, "started": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0
                      else "Error"), "message": text, "startedAt": now(), "finishedAt": now()}},
        } for c in pod["spec"]["containers"]]  # fmt: skip
        conditions = [c for c in pod["status"].get("conditions", []) if c["type"] not in ("Ready", "ContainersReady")]
        conditions += [{"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now()}
                       for t in ("Ready", "ContainersReady")]  # fmt: skip
        self.patch("Pod", namespace, name, {"status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": statuses,
            "conditions": conditions}}, "status")  # fmt: skip

    def serve_container_log(self, namespace: str, pod: str, log: Path) -> None:
        """The container runtime's half of pods/log: tell kwok (a `Logs` object named after the pod) which file
        holds the pod's container log, written in CRI's format (`run_logged`), and wait until it serves it."""
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
        self.create({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
                     "metadata": {"name": pod, "namespace": namespace},
                     "spec": {"logs": [{"logsFile": str(log), "follow": True}]}})  # fmt: skip

        last: list[str] = []

        def served() -> bool:
            try:
                self.request("GET", _path("Pod", namespace, pod, "log"), query={"tailLines": "1"})
            except ApiException as exc:  # kwok has not seen the Logs object yet: "no logs found for container"
                last[:] = [f"{exc.status} {exc.body or exc.reason}"]
                return False
            except ValueError:
                return True  # lines already (not JSON): served
            return True

        try:
            self.wait_for(served, 30, f"kwok to serve the log of pod {namespace}/{pod}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the API server said: {last}") from None

    def disrupt_pod(self, namespace: str, name: str, reason: str, message: str) -> None:
        """A DisruptionTarget condition and a failed phase, as preemption or a lost node leave a pod."""
        pod = self.get("Pod", namespace, name)
        assert pod is not None
        conditions = [
            *pod["status"].get("conditions", []),
            {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message,
             "lastTransitionTime": now()}]  # fmt: skip
        self.patch("Pod", namespace, name, {"status": {"phase": "Failed", "conditions": conditions}}, "status")

    # --------------------------------------------------------------------------------- helpers

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30, what: str = "",
                 interval: float = 0.2) -> Any:  # fmt: skip
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}; last saw: {last!r}")

    def claim(self, namespace: str, name: str) -> None:
        """A Bound PersistentVolumeClaim (the scheduler refuses pods with unbound claims). The PV is a
        pre-bound hostPath that nothing ever mounts: kwok runs no containers."""
        pv = f"pv-{namespace}-{name}"[:63]
        self.create({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
                     "spec": {"capacity": {"storage": "100Gi"}, "accessModes": ["ReadWriteMany"],
                              "hostPath": {"path": f"/nonexistent/{pv}"}, "storageClassName": "",
                              "persistentVolumeReclaimPolicy": "Retain",
                              "claimRef": {"namespace": namespace, "name": name}}})  # fmt: skip
        self.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": name, "namespace": namespace},
                     "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                              "resources": {"requests": {"storage": "100Gi"}}}})  # fmt: skip
        self.wait_for(lambda: (self.get("PersistentVolumeClaim", namespace, name) or {}).get("status", {})
                      .get("phase") == "Bound", 30, f"claim {name} Bound")  # fmt: skip

    def namespace(self, prefix: str, labels: dict[str, str] | None = None) -> str:
        name = f"{prefix[:40].rstrip('-')}-{uuid.uuid4().hex[:5]}".lower()
        self.create(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"modelforge.io/test": "true", **(labels or {})}},
            }
        )
        # A pod created before the namespace's default ServiceAccount exists is refused: wait for it.
        self.wait_for(lambda: self._default_sa(name), 30, f"the default ServiceAccount of {name}")
        return name

    def _default_sa(self, namespace: str) -> bool:
        try:
            self.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
        except ApiException:
            return False
        return True

    def check_loopback(self) -> None:
        """Every node and pod address is in 127.0.0.0/8, or the test run stops here."""
        bad = []
        for node in self.list("Node"):
            for addr in node.get("status", {}).get("addresses", []):
                if addr["type"].endswith("IP") and ipaddress.ip_address(addr["address"]) not in LOOPBACK:
                    bad.append(f"node {node['metadata']['name']}: {addr['address']}")
        for pod in self.list("Pod"):
            st = pod.get("status", {})
            for ip in (st.get("podIP"), st.get("hostIP")):
                if ip and ipaddress.ip_address(ip) not in LOOPBACK:
                    bad.append(f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']}: {ip}")
        assert not bad, f"addresses outside 127.0.0.0/8 (no test may send traffic there): {bad}"


class ContainerProcess:
    """A pod's program run as a container runtime runs it: every line it prints on stdout and stderr goes to
    `log` in CRI's log format (`<RFC 3339 time> <stream> F <line>`), the file a kubelet serves for pods/log.
    Its own process group, stopped by PID."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None):
        import threading

        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                                     stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        self._out = open(log, "ab")  # noqa: SIM115 (closed by stop)
        self._lock = threading.Lock()
        self._pumps = [threading.Thread(target=self._pump, args=(self.proc.stdout, b"stdout")),
                       threading.Thread(target=self._pump, args=(self.proc.stderr, b"stderr"))]  # fmt: skip
        for thread in self._pumps:
            thread.start()

    def _pump(self, pipe: Any, stream: bytes) -> None:
        for line in iter(pipe.readline, b""):
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
            with self._lock:
                self._out.write(stamp + b" " + stream + b" F " + line.rstrip(b"\n") + b"\n")
                self._out.flush()

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self, grace: float = 30) -> None:
        """Stop the process group (if still running), then let the last lines reach the log."""
        stop_process_group(self.proc, grace)  # type: ignore[arg-type]
        for thread in self._pumps:
            thread.join(30)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        self._out.close()


def run_logged(argv: list[str], env: dict[str, str], log: Path, timeout: float) -> int:
    """Run a pod's program to its end (a ContainerProcess); returns the exit code."""
    container = ContainerProcess(argv, env, log)
    try:
        return container.proc.wait(timeout)
    finally:
        container.stop()


def log_text(log: Path) -> str:
    """What a CRI-format log file says, without its time and stream columns (what `kubectl logs` prints)."""
    # Bytes, split at \n only: text mode or splitlines() would break a progress bar's \r into lines.
    lines = log.read_bytes().decode(errors="replace").split("\n")
    return "".join(line.split(" ", 3)[3] + "\n" for line in lines if line.count(" ") >= 3)


def container_env(pod: dict[str, Any]) -> dict[str, str]:
    """The main container's environment as a kubelet resolves it: values, and the downward API's labels,
    annotations and metadata fields (an Indexed Job's JOB_COMPLETION_INDEX)."""
    env = {}
    meta = pod["metadata"]
    for entry in pod["spec"]["containers"][0].get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        field = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath", "")
        for where in ("labels", "annotations"):  # metadata.labels['batch.kubernetes.io/job-completion-index']
            if field.startswith(f"metadata.{where}['") and field.endswith("']"):
                env[entry["name"]] = (meta.get(where) or {}).get(field[len(f"metadata.{where}['") : -2], "")
        if field in ("metadata.name", "metadata.namespace"):
            env[entry["name"]] = meta[field.split(".")[1]]
    return env


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGTERM to the process group we started (start_new_session), SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(KUBECTL), "--kubeconfig", str(kubeconfig), *args], input=stdin,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def helm(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(HELM), "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc
