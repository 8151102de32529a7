"""End to end on a kind cluster built here (tests/e2e/kindcluster.py): real kubelet, containerd, CNI,
kube-proxy, CoreDNS and local-path storage. The images `make images` built are loaded into the worker; the
chart is installed into a namespace that enforces Pod Security `restricted`, and so is every FineTuneJob and
ModelServe here. The story, in order (the tests share one cluster, and each asserts through the API):

1. the operator runs as the chart's Deployment: its ServiceAccount, probes, and the metrics Service scraped;
2. the tiny model and its data are copied onto a claim as a user of an air-gapped cluster would
   (docs/air-gapped.md); a FineTuneJob trains it in a real container as UID 10001 while `helm upgrade` rolls
   the operator; it ends Succeeded, `modelforge logs` shows its loss; its spec.serve ModelServe (swift) is
   Ready and `modelforge chat` answers through `kubectl port-forward`;
   then a vLLM (CPU image) ModelServe serves two of that job's checkpoints as live adapters, with its API key
   from a Secret; one removed from the spec is unloaded within seconds (the operator annotates the pod, so
   its kubelet refreshes the mounted ConfigMap at once), in the same pod (the delay is printed);
3. the kubelet's own faults: `kubectl delete pod` of a running rank (SIGTERM: a checkpoint at the step
   reached, the next attempt resumes from it), `kubectl drain` of the worker (the disruption in status, a
   resume once it is uncordoned), a memory limit below need (OOMKilled);
4. a two-node FineTuneJob: two pods, MASTER_ADDR by the headless Service's DNS name, gloo over the pod
   network, one model (the ranks' identical-weights check), Succeeded;
5. `helm uninstall` leaves nothing of the release behind;
6. nothing dialed beyond this machine: the nodes' egress counters are zero; this process's own connections
   (the port-forward checks) went to loopback, and its kubectl, helm and CLI subprocesses to the API server
   published on 127.0.0.1 and port-forward's 127.0.0.1 port.

`make e2e` runs this tier alone; it is part of `make test` and CI, where a skip is a failure. KEEP_CLUSTER=1
keeps the cluster, and REUSE_CLUSTER=1 runs the next time on that one (its namespaces recreated: no build, no
image loads); after a failure the operator's log, the events and the failing pods' logs are printed and
`kind export logs` writes every node's logs to the directory the output names.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e import kindcluster
from tests.e2e.conftest import BACKGROUND, DIALED, FAILED, IMAGES, RECORDING, e2e_gate, missing, not_local
from tests.images.pod import image_name

ROOT = Path(__file__).resolve().parents[2]
NS = "e2e"
SYSTEM = "modelforge-system"
OPERATOR = "modelforge-operator"  # the chart's name for the Deployment, its ServiceAccount and Services
HELM = str(ROOT / ".tools" / "bin" / "helm")
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
API = "modelforge.io/v1alpha1"


if not os.environ.get("CI"):
    e2e_gate(missing())  # elsewhere: a skip with what to run


def sh(*args: str, timeout: float = 900, check: bool = True, env_extra: dict[str, str] | None = None,
       **kw) -> subprocess.CompletedProcess[str]:  # fmt: skip
    print("+", " ".join(args), flush=True)
    env = {**os.environ, "KUBECONFIG": str(kindcluster.kubeconfig_path()), **(env_extra or {})}
    result = subprocess.run(list(args), text=True, capture_output=True, timeout=timeout, check=False, env=env, **kw)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(args[:4])} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def kubectl(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return sh(str(kindcluster.bin_dir() / "kubectl"), *args, **kw)


def modelforge(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return sh(sys.executable, "-m", "modelforge.cli", *args, **kw)


def apply(manifest: dict, namespace: str = NS) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def get(kind: str, name: str, namespace: str = NS) -> dict:
    result = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def status(kind: str, name: str) -> dict:
    return get(kind, name).get("status", {})


def wait_for(what: str, predicate, timeout: float = 900, every: float = 2, show=None):  # type: ignore[no-untyped-def]
    """Poll the API until `predicate` returns something true; the failure names what was last seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; last seen: {show() if show else value}"
            )
        time.sleep(every)


def ftj_done(name: str) -> dict:
    return wait_for(f"FineTuneJob {name} to end", lambda: status("ftj", name).get("phase") in ("Succeeded", "Failed")
                    and status("ftj", name), show=lambda: status("ftj", name))  # fmt: skip


def finetunejob(name: str, steps: int, **spec) -> dict:
    """The tiny model's FineTuneJob on the claim the story loaded (1 CPU: the worker has 2)."""
    body = {
        "model": {"source": "pvc://models/tiny", "modelType": "qwen3", "template": "qwen3"},
        "datasets": [{"source": "pvc://models/data/chat.jsonl"}],
        "hyperparameters": {"maxSteps": steps, "learningRate": 5e-3, "batchSizePerDevice": 2, "maxLength": 256,
                            "loggingSteps": 2},
        "output": {"claimName": "models", "subPath": f"jobs/{name}"},
        "resources": {"memory": "4Gi", "cpu": "1"},
    }  # fmt: skip
    for key, value in spec.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return {"apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": name}, "spec": body}


def job_pods(name: str) -> list[dict]:
    pods = kubectl("get", "pods", "-n", NS, "-l", f"modelforge.io/job={name}", "-o", "json").stdout
    return json.loads(pods)["items"]


def running_pod(name: str) -> str:
    return wait_for(f"a running pod of {name}", lambda: next(
        (p["metadata"]["name"] for p in job_pods(name) if p["status"].get("phase") == "Running"
         and not p["metadata"].get("deletionTimestamp")), None))  # fmt: skip


def checkpoint_step(path: str | None) -> int:
    match = re.search(r"checkpoint-(\d+)$", path or "")
    return int(match.group(1)) if match else -1


@contextmanager
def port_forward(target: str, port: int, namespace: str = NS) -> Iterator[int]:
    """`kubectl port-forward` to a free port of this machine's loopback; yields that port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
    env = {**os.environ, "KUBECONFIG": str(kindcluster.kubeconfig_path())}
    forward = subprocess.Popen([str(kindcluster.bin_dir() / "kubectl"), "-n", namespace, "port-forward",
                                "--address", "127.0.0.1", target, f"{local}:{port}"], env=env)  # fmt: skip
    try:

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", local)) == 0

        wait_for(f"the port-forward to {target}", listening, timeout=60, every=0.5)
        yield local
    finally:
        forward.terminate()
        forward.wait(30)


def _diagnose() -> None:
    """What a failed run needs: the operator's log, the events, the logs of pods that are not well, every
    node's logs on disk."""
    print("\n======== the operator's log (last 200 lines)")
    print(kubectl("logs", "-n", SYSTEM, f"deployment/{OPERATOR}", "--tail=200", check=False).stdout)
    print("======== events")
    print(kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False).stdout[-20000:])
    pods = json.loads(kubectl("get", "pods", "-A", "-o", "json", check=False).stdout or '{"items": []}')["items"]
    for pod in pods:
        statuses = pod["status"].get("containerStatuses") or []
        if pod["status"].get("phase") in ("Failed", "Pending") or any(s.get("restartCount") for s in statuses):
            meta = pod["metadata"]
            print(f"======== pod {meta['namespace']}/{meta['name']} ({pod['status'].get('phase')})")
            print(kubectl("logs", "-n", meta["namespace"], meta["name"], "--all-containers", "--tail=100",
                          check=False).stdout)  # fmt: skip
    dest = Path(tempfile.mkdtemp(prefix="modelforge-kind-logs-"))
    try:
        kindcluster.export_logs(dest)
        print(f"======== every node's logs (kind export logs): {dest}")
    except SystemExit as exc:
        print(f"kind export logs failed: {exc}")


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[None]:
    lacking = missing()  # in CI a failure of this tier's tests, not a collection error that hides the others
    if lacking:
        e2e_gate(lacking)
    RECORDING[0] = True
    # A cluster KEEP_CLUSTER=1 kept (conftest.py starts none in the background then)
    reuse = not BACKGROUND and os.environ.get("REUSE_CLUSTER") and kindcluster.status() == 0
    started = False
    try:
        try:
            if reuse:
                sh(HELM, "uninstall", "modelforge", "--namespace", SYSTEM, "--wait", check=False)
                for namespace in (NS, SYSTEM):
                    kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", timeout=300)
                kubectl("uncordon", kindcluster.WORKER)
                kindcluster.egress_guard()  # the counters start from zero for this run
            elif BACKGROUND:
                BACKGROUND[0].wait()  # started when collection ended (conftest.py)
            else:
                kindcluster.up()
            kindcluster.load([image_name(n) for n in IMAGES])  # an image the worker has is skipped
        except SystemExit as exc:  # kindcluster's one-line errors
            pytest.fail(f"the kind cluster could not start: {exc}", pytrace=False)
        started = True
        # A fake GPU: the CPU trainer ignores it, but the scheduler sees the capacity jobs ask for.
        kubectl("patch", "node", kindcluster.WORKER, "--subresource=status", "--type=json", "-p",
                json.dumps([{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "4"}]))  # fmt: skip
        for namespace in (NS, SYSTEM):
            kubectl("create", "namespace", namespace)
            kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in RESTRICTED.items()))
        # The chart's image names are what `make images` tags: only the CPU trainer is set.
        sh(HELM, "install", "modelforge", str(ROOT / "helm" / "modelforge"), "--namespace", SYSTEM, "--wait",
           "--timeout", "5m", "--set", f"trainer.image={image_name('trainer-cpu')}",
           "--set", f"serving.swiftImage={image_name('trainer-cpu')}",
           "--set", f"serving.vllmImage={image_name('vllm-cpu')}", "--set", "operator.pollSeconds=3")  # fmt: skip
        kubectl("rollout", "status", "-n", SYSTEM, f"deployment/{OPERATOR}", "--timeout=180s", timeout=200)
        yield
    except BaseException:
        request.session.stash.setdefault(FAILED, []).append("the kind cluster's setup")
        raise
    finally:
        RECORDING[0] = False
        try:
            if started and request.session.stash.get(FAILED, []):
                _diagnose()
        except Exception as exc:  # the cluster is deleted whatever the diagnosis did
            print(f"the diagnosis failed: {exc}")
        if not os.environ.get("KEEP_CLUSTER"):
            kindcluster.down()


@pytest.fixture(autouse=True)
def nothing_left_running(cluster: None) -> Iterator[None]:
    """A test that failed half-way leaves no training or serving pod to starve the next of the worker's CPUs."""
    yield
    kubectl("delete", "-n", NS, "ftj,mserve", "--all", "--wait=true", timeout=300, check=False)


def test_operator_runs_as_the_charts_deployment(cluster: None) -> None:
    deployment = get("deployment", OPERATOR, SYSTEM)
    assert deployment["status"].get("availableReplicas") == 1, deployment["status"]
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == OPERATOR
    container = spec["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", container
    pods = json.loads(kubectl("get", "pods", "-n", SYSTEM, "-l", "app.kubernetes.io/name=modelforge", "-o",
                              "json").stdout)["items"]  # fmt: skip
    assert [(s["ready"], s["restartCount"]) for p in pods for s in p["status"]["containerStatuses"]] == [(True, 0)]
    assert pods[0]["spec"]["nodeName"] == kindcluster.WORKER
    # Scraped as Prometheus would, through the Service (the API server's proxy crosses to the worker's pod).
    path = f"/api/v1/namespaces/{SYSTEM}/services/{OPERATOR}-metrics:metrics/proxy/metrics"
    metrics = wait_for("the metrics Service", lambda: kubectl("get", "--raw", path, check=False).stdout, timeout=60)
    assert "# TYPE modelforge_finetunejobs gauge" in metrics, metrics[:2000]


@pytest.fixture(scope="module")
def models(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The air-gapped recipe (docs/air-gapped.md): a claim, a loader pod, `kubectl cp` of the model and data."""
    local = tmp_path_factory.mktemp("models")
    # hidden 128: vLLM's CPU attention needs a head size of 32 or more (the vLLM step serves this model too)
    modelforge("tiny-model", str(local / "tiny"), "--hidden", "128", "--dataset", str(local / "data" / "chat.jsonl"))
    loader = (ROOT / "docs" / "manifests" / "model-loader.yaml").read_text().replace(
        "ghcr.io/modelforge/trainer:0.1.0", image_name("trainer-cpu"))  # fmt: skip
    kubectl("apply", "-n", NS, "-f", "-", input=loader)
    kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/model-loader", "--timeout=300s", timeout=320)
    for what in ("tiny", "data"):
        kubectl("cp", "-n", NS, str(local / what), f"model-loader:/mnt/models/{what}", timeout=300)
    listed = kubectl("exec", "-n", NS, "model-loader", "--", "ls", "-n", "/mnt/models/tiny").stdout
    assert "config.json" in listed and " 10001 10001 " in listed, listed  # written as the trainer's user
    kubectl("delete", "-n", NS, "pod/model-loader", "--wait=true")
    return "models"


def test_finetune_in_a_container_then_serve_then_chat(models: str) -> None:
    apply(finetunejob("tiny", 800, checkpointing={"saveSteps": 200}, output={"merge": True},
                      serve={"spec": {"engine": "swift", "resources": {"gpusPerReplica": 0}}}))  # fmt: skip
    wait_for("progress with a loss", lambda: status("ftj", "tiny").get("progress", {}).get("loss") is not None,
             show=lambda: status("ftj", "tiny"))  # fmt: skip
    header, row = kubectl("get", "ftj", "tiny", "-n", NS).stdout.splitlines()[:2]
    assert header.split()[5:7] == ["PROGRESS", "LOSS"], header  # the printer columns, with values
    assert re.search(r" Running .* \d+/800 \(\d+%\) +\d+\.\d+ ", row), row
    pod = get("pod", running_pod("tiny"))
    context = {**pod["spec"].get("securityContext", {}), **pod["spec"]["containers"][0].get("securityContext", {})}
    assert context.get("runAsUser") == 10001 and context.get("fsGroup") == 10001, context
    # helm upgrade with a changed value while the job runs: a new operator pod takes over, the job goes on.
    before = {
        p["metadata"]["name"] for p in json.loads(kubectl("get", "pods", "-n", SYSTEM, "-o", "json").stdout)["items"]
    }
    assert status("ftj", "tiny").get("phase") == "Running"
    sh(HELM, "upgrade", "modelforge", str(ROOT / "helm" / "modelforge"), "--namespace", SYSTEM, "--reuse-values",
       "--set", "operator.pollSeconds=4", "--wait", "--timeout", "5m")  # fmt: skip

    def operator_pods() -> set[str]:
        listed = kubectl("get", "pods", "-n", SYSTEM, "-l", "app.kubernetes.io/name=modelforge", "-o", "json").stdout
        return {p["metadata"]["name"] for p in json.loads(listed)["items"]}

    # A new pod took over (helm's --wait), and the old one stops within its grace period.
    assert operator_pods() - before, "helm upgrade did not roll the operator"
    wait_for("the old operator pod gone", lambda: not operator_pods() & before, timeout=120, show=operator_pods)
    upgraded = status("ftj", "tiny")
    assert upgraded.get("phase") == "Running", upgraded  # still training: the new operator picks it up
    at_upgrade = upgraded.get("progress", {}).get("step", 0)
    wait_for("progress reported by the new operator", lambda: status("ftj", "tiny").get("phase") == "Succeeded"
             or status("ftj", "tiny").get("progress", {}).get("step", 0) > at_upgrade)  # fmt: skip

    final = ftj_done("tiny")
    assert final["phase"] == "Succeeded", final
    assert final["outputs"]["mergedModel"] == "pvc://models/jobs/tiny/merged"
    assert checkpoint_step(final.get("latestCheckpoint")) >= 600, final
    logs = modelforge("logs", "tiny", "-n", NS)
    assert re.search(r"'loss': '?[0-9.]+", logs.stdout), logs.stdout[-3000:]

    serve = wait_for("the ModelServe Ready", lambda: status("mserve", "tiny").get("phase") == "Ready"
                     and status("mserve", "tiny"), timeout=600, show=lambda: status("mserve", "tiny"))  # fmt: skip
    assert serve["phase"] == "Ready"
    with port_forward("svc/tiny", 8000) as port:
        answer = modelforge("chat", "--endpoint", f"http://127.0.0.1:{port}/v1", "--max-new-tokens", "16",
                            "How do I reset my password?", timeout=300)  # fmt: skip
    assert "[tiny:" in answer.stderr, answer.stderr
    assert answer.stdout.strip(), "the fine-tuned model gave an empty answer"
    kubectl("delete", "-n", NS, "mserve/tiny", "--wait=true")  # its CPU for the next tests


KEY = "e2e-serve-key-not-a-secret"  # a throwaway key for a Service that only port-forward reaches


def served_models(port: int) -> list[str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return sorted(m["id"] for m in json.load(response)["data"])


def serve_pods(name: str) -> list[dict]:
    listed = kubectl("get", "pods", "-n", NS, "-l", f"modelforge.io/serve={name}", "-o", "json").stdout
    return json.loads(listed)["items"]


def test_vllm_serves_two_live_adapters_and_unloads_one_without_a_restart(models: str) -> None:
    """The fine-tune above kept its last two checkpoints (saveSteps 200, keepLast 2 of 800 steps): each is an
    adapter. vLLM's CPU build sizes its KV cache from the node's memory, not the pod's limit, so the spec
    gives it one explicitly (docs/serving.md)."""
    kubectl("create", "secret", "generic", "lora-key", "-n", NS, f"--from-literal=key={KEY}")
    run = "pvc://models/jobs/tiny/run"
    apply({"apiVersion": API, "kind": "ModelServe", "metadata": {"name": "lora"},
           "spec": {"model": {"source": "pvc://models/tiny"}, "engine": "vllm", "maxModelLen": 512,
                    "dtype": "float32", "maxLoraRank": 8,
                    "adapters": [{"name": "early", "source": f"{run}/checkpoint-600"},
                                 {"name": "late", "source": f"{run}/checkpoint-800"}],
                    "apiKeySecretRef": {"name": "lora-key", "key": "key"},
                    "resources": {"cpu": "1", "memory": "4Gi"},  # and the simulated GPU vLLM asks for
                    "extraArgs": ["--kv-cache-memory-bytes", "512M"]}})  # fmt: skip

    def loaded() -> list[tuple[str, str]]:
        return [(a["name"], a["state"]) for a in status("mserve", "lora").get("adapters") or []]

    wait_for("the vLLM ModelServe Ready with both adapters Loaded", lambda: status("mserve", "lora").get("phase")
             == "Ready" and loaded() == [("early", "Loaded"), ("late", "Loaded")], timeout=600,
             show=lambda: status("mserve", "lora"))  # fmt: skip
    assert sorted(status("mserve", "lora")["models"]) == ["early", "late", "lora"], status("mserve", "lora")
    (pod,) = serve_pods("lora")
    with port_forward("svc/lora", 8000) as port:
        assert served_models(port) == ["early", "late", "lora"]
        answer = modelforge("chat", "--endpoint", f"http://127.0.0.1:{port}/v1", "--api-key-env", "LORA_KEY",
                            "--model", "late", "--max-new-tokens", "8", "How do I reset my password?",
                            timeout=300, env_extra={"LORA_KEY": KEY})  # fmt: skip
        assert "[late:" in answer.stderr and answer.stdout.strip(), (answer.stdout, answer.stderr)

        # Remove "early" from the spec: the operator rewrites the ConfigMap and annotates the pod with the new
        # list's digest, which makes the kubelet refresh the pod's copy at once (left to its periodic sync, 72
        # and 85 s were measured here); then one agent pass unloads it.
        removed = time.monotonic()
        kubectl("patch", "mserve", "lora", "-n", NS, "--type=json", "-p",
                json.dumps([{"op": "remove", "path": "/spec/adapters/0"}]))  # fmt: skip
        wait_for("early unloaded from the engine", lambda: "early" not in (status("mserve", "lora").get("models")
                 or ["early"]), timeout=240, show=lambda: status("mserve", "lora"))  # fmt: skip
        delay = time.monotonic() - removed
        assert served_models(port) == ["late", "lora"]
    print(f"\nadapter removed from the spec -> unloaded by the engine: {delay:.0f} s")
    # Not a timing target (that is docs/benchmarks.md's): the kubelet's periodic sync alone takes 60-90 s, so
    # a delay under 45 s is the annotation's refresh, and the digest on the pod is the new list's.
    assert delay < 45, f"{delay:.0f} s: the pod annotation did not make the kubelet refresh the ConfigMap"
    assert loaded() == [("late", "Loaded")], status("mserve", "lora")
    (after,) = serve_pods("lora")
    assert after["metadata"]["uid"] == pod["metadata"]["uid"], "the pod was replaced: not a live unload"
    config = get("configmap", "lora-adapters")
    digest = after["metadata"]["annotations"]["modelforge.io/adapters-digest"]
    assert digest == hashlib.sha256(config["data"]["adapters.json"].encode()).hexdigest()[:16], (digest, config)
    restarts = [(s["name"], s["restartCount"]) for s in after["status"]["containerStatuses"]]
    assert all(count == 0 for _, count in restarts), restarts
    kubectl("delete", "-n", NS, "mserve/lora", "secret/lora-key", "--wait=true")


def restarting(name: str, attempt: int) -> str:
    """The Restarting event that ended `attempt` (it names the cause and the checkpoint the next one resumes)."""
    listed = kubectl("get", "events", "-n", NS, "--field-selector", f"involvedObject.name={name},reason=Restarting",
                     "-o", "json").stdout  # fmt: skip
    said = [e["message"] for e in json.loads(listed)["items"] if e["message"].startswith(f"attempt {attempt} failed")]
    return said[0] if said else ""


def resumed_from(name: str) -> int:
    """The checkpoint the current attempt's launcher resumed from (its log says so)."""
    said = modelforge("logs", name, "-n", NS).stdout
    match = re.search(r"resuming from checkpoint-(\d+)", said)
    assert match, said[-2000:]
    return int(match.group(1))


def test_sigterm_then_drain_each_resume_from_their_checkpoint(models: str) -> None:
    # The tiny model trains ~14 steps/s on the worker: long enough to be interrupted twice, deleted after. No
    # periodic checkpoint: every checkpoint there is to resume from is one a stopped trainer saved.
    apply(finetunejob("faults", 20000, checkpointing={"saveSteps": 100000}, failurePolicy={"backoffSeconds": 0}))
    wait_for("step 60", lambda: status("ftj", "faults").get("progress", {}).get("step", 0) >= 60,
             show=lambda: status("ftj", "faults"))  # fmt: skip
    # 1. kubectl delete pod: the kubelet's SIGTERM; the trainer saves at the step reached and exits retryable,
    # and the Job's failure policy keeps that evidence after the pod is gone.
    victim = running_pod("faults")
    step_before = status("ftj", "faults")["progress"]["step"]
    kubectl("delete", "pod", "-n", NS, victim, "--wait=false")
    event = wait_for("the restart after SIGTERM", lambda: restarting("faults", 1))
    # The trainer's own report when the operator read the pod before it was gone, else the Job's evidence.
    assert re.search(rf"\(Interrupted: (stopped by a signal after saving checkpoint-|pod {NS}/{victim} exited with "
                     "the launcher's retryable code 75)", event), event  # fmt: skip
    wait_for("attempt 2's progress", lambda: status("ftj", "faults").get("attempt") == 2
             and status("ftj", "faults").get("progress", {}).get("step", 0) > step_before,
             show=lambda: status("ftj", "faults"))  # fmt: skip
    saved = resumed_from("faults")  # saved at the step the signal found, in the grace period
    assert saved >= step_before > 0, (saved, step_before)

    # 2. kubectl drain of the worker (its training pods): an eviction, the disruption in status, a resume once
    # the node takes pods again, from what the evicted trainer saved in its grace period: attempt 3 waited for
    # its pod to stop.
    wait_for("attempt 2 past its resume", lambda: status("ftj", "faults").get("progress", {}).get("step", 0)
             > saved + 10, show=lambda: status("ftj", "faults"))  # fmt: skip
    pod = running_pod("faults")
    step_before = status("ftj", "faults")["progress"]["step"]
    try:
        drained = kubectl("drain", kindcluster.WORKER, "--pod-selector=modelforge.io/job=faults",
                          "--delete-emptydir-data", "--ignore-daemonsets", "--timeout=180s", timeout=240)  # fmt: skip
        assert f"pod/{pod} evicted" in drained.stdout, drained.stdout
        event = wait_for("the restart after the drain", lambda: restarting("faults", 2))
        assert "(Evicted: " in event, event
    finally:
        kubectl("uncordon", kindcluster.WORKER)
    wait_for("attempt 3's progress", lambda: status("ftj", "faults").get("attempt") == 3
             and status("ftj", "faults").get("progress", {}).get("step", 0) > step_before,
             show=lambda: status("ftj", "faults"))  # fmt: skip
    # Only the evicted trainer's save is newer than `saved`: attempt 3 resumed from it, so it waited for it.
    at_drain = resumed_from("faults")
    assert at_drain >= step_before > saved, (at_drain, step_before, saved)
    kubectl("delete", "-n", NS, "ftj/faults", "--wait=true")


def test_a_memory_limit_below_need_is_oomkilled(models: str) -> None:
    apply(finetunejob("small", 20, resources={"memory": "300Mi"}))
    final = ftj_done("small")
    assert final["phase"] == "Failed", final
    failed = [c for c in final.get("conditions", []) if c["type"] == "Failed"]
    assert failed and failed[0]["reason"] == "OOMKilled", final
    assert "resources.memory" in failed[0]["message"], failed


def test_two_node_finetune_over_the_pod_network(models: str) -> None:
    # DDP over gloo: ZeRO on the CPU image would compile DeepSpeed's shm op at run time, and the image has no
    # compiler (found here; the failure is now a ConfigError at once, not retried; docs/launcher.md).
    apply(finetunejob("pair", 10, resources={"nodes": 2, "cpu": "500m", "memory": "3Gi"},
                      distributed={"deepspeed": "none"}))  # fmt: skip
    final = ftj_done("pair")
    assert final["phase"] == "Succeeded", final
    pods = job_pods("pair")
    assert len({p["metadata"]["name"] for p in pods}) >= 2, pods
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0].get("env", [])}
    assert re.fullmatch(r"pair[a-z0-9-]*-0\.pair[a-z0-9-]*\.e2e\.svc", env.get("MASTER_ADDR", "")), env
    rank0 = modelforge("logs", "pair", "-n", NS).stdout
    assert "2 processes joined one process group (gloo" in rank0, rank0[-3000:]
    assert "ranks hold identical weights" in rank0, rank0[-3000:]
    kubectl("delete", "-n", NS, "ftj/pair", "--wait=true")


def test_helm_uninstall_leaves_nothing_behind(cluster: None) -> None:
    kubectl("delete", "-n", NS, "ftj", "--all", "--wait=true")
    sh(HELM, "uninstall", "modelforge", "--namespace", SYSTEM, "--wait", "--timeout", "3m")
    kinds = "deployments,replicasets,pods,services,serviceaccounts,configmaps,secrets,roles,rolebindings"

    def left() -> str:
        listed = [kubectl("get", kinds, "-n", SYSTEM, "-l", "app.kubernetes.io/instance=modelforge", "-o", "name"),
                  kubectl("get", "clusterroles,clusterrolebindings", "-l", "app.kubernetes.io/instance=modelforge",
                          "-o", "name")]  # fmt: skip
        return "".join(r.stdout for r in listed).strip()

    # The operator's pod goes with its ReplicaSet (garbage collection, after its grace period): waited for.
    wait_for("the release's objects to be gone", lambda: not left(), timeout=120, show=left)
    # The CRDs stay, as helm keeps every chart's crds/ (deleting them would delete every user's jobs).
    assert kubectl("get", "crd", "finetunejobs.modelforge.io", check=False).returncode == 0


def test_nothing_dialed_beyond_this_machine(cluster: None) -> None:
    report = kindcluster.egress_report()
    rejected = {node: r for node, r in report.items() if r["packets"]}
    assert report and not rejected, f"packets for addresses beyond this machine, rejected: {rejected}"
    assert not not_local(DIALED), f"this test process dialed {not_local(DIALED)}"
    # The private ranges the nodes allow are this run's own cluster's: its Service range and its nodes' pod ranges
    # (they exist only inside the kind nodes, on the kind bridge this run created).
    service_ip = ipaddress.ip_address(kubectl("get", "svc", "kubernetes", "-n", "default", "-o",
                                              "jsonpath={.spec.clusterIP}").stdout)  # fmt: skip
    assert service_ip in ipaddress.ip_network(kindcluster.SERVICE_SUBNET), service_ip
    cidrs = kubectl("get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}").stdout.split()
    assert cidrs and all(ipaddress.ip_network(c).subnet_of(ipaddress.ip_network(kindcluster.POD_SUBNET)) for c in cidrs)
    # kubectl and helm dial only the kubeconfig's server: the API server's port published on loopback.
    server = kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+", server), server
