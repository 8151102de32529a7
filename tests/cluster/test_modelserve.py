"""ModelServe on the real control plane: Deployment -> ReplicaSet -> pods (kwok) -> Service, status from the
REAL engine (`swift deploy` with the rendered argv) listening on the pod's IP, scaling, rolling, and
`fromFineTuneJob`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from .kube import ROOT, ContainerProcess, Kube, container_env, kubectl, log_text
from .operator import OperatorProcess
from .test_finetunejob import finetunejob, running_pods

PVC_ROOT = "/mnt/pvc"


def serve(ns: str, name: str = "chat", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": {"source": "pvc://models/tiny"}, "engine": "swift",
                            "resources": {"gpusPerReplica": 0}, "maxModelLen": 512,
                            # a bare local model: ms-swift cannot infer its type (a merged output carries it)
                            "extraArgs": ["--model_type", "qwen3", "--template", "qwen3"]}  # fmt: skip
    body.update(spec)
    return {"apiVersion": "modelforge.io/v1alpha1", "kind": "ModelServe",
            "metadata": {"name": name, "namespace": ns}, "spec": body}  # fmt: skip


def serve_status(kube: Kube, ns: str, name: str = "chat") -> dict[str, Any]:
    return (kube.get("ModelServe", ns, name) or {}).get("status") or {}


def ready_pods(kube: Kube, ns: str, name: str, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        pods = [
            p
            for p in kube.list("Pod", ns, {"modelforge.io/serve": name})
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        return pods if len(pods) == count else None  # fmt: skip

    return kube.wait_for(ready, 60, f"{count} ready pod(s) of {name}")


class Engine:
    """The pod's program, run here: the container's command and args from the Deployment, with the pod's
    mounts mapped to local directories and bound to the pod's IP (kwok runs no containers)."""

    def __init__(self, pod: dict[str, Any], mounts: dict[str, Path], log: Path):
        container = pod["spec"]["containers"][0]
        assert container["command"][:3] == ["python", "-m", "modelforge.launcher.swift_serve"], container["command"]
        args = list(container["args"])
        for pod_path, local in mounts.items():
            args = [a.replace(pod_path, str(local)) for a in args]
        args[args.index("--host") + 1] = pod["status"]["podIP"]
        self.url = f"http://{pod['status']['podIP']}:{args[args.index('--port') + 1]}"
        env = {**os.environ, **container_env(pod)}
        # tests/cluster/engine_main.py: the same entry point, but it stays on the pod's port (see there). Its
        # output is the container's log (CRI format), which kwok serves for pods/log once told where it is.
        self.proc = ContainerProcess([sys.executable, "-m", "tests.cluster.engine_main", *args], env, log, ROOT)

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the engine exited with {self.proc.poll()}"
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"{self.url}/health did not answer within {timeout} s")

    def stop(self) -> None:
        self.proc.stop(grace=20)


@pytest.fixture
def models_claim(kube: Kube, ns: str, tiny_model: Path, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """The `models` claim with the tiny model at tiny/, as the pod would see it under /mnt/pvc/models."""
    kube.claim(ns, "models")
    root = tmp_path / "pvc-models"
    root.mkdir()
    (root / "tiny").symlink_to(tiny_model, target_is_directory=True)
    yield {f"{PVC_ROOT}/models": root}


def test_serve_chain_status_from_the_real_engine_scale_and_roll(kube: Kube, operator: OperatorProcess, ns: str,
                                                                 models_claim: dict[str, Path],
                                                                 tmp_path: Path) -> None:  # fmt: skip
    kube.create(serve(ns))
    deployment = kube.wait_for(lambda: kube.get("Deployment", ns, "chat"), 30, "the Deployment")
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "ModelServe"
    pod = ready_pods(kube, ns, "chat", 1)[0]
    service = kube.wait_for(lambda: kube.get("Service", ns, "chat"), 30, "the Service")
    assert service["spec"]["ports"][0]["port"] == 8000
    # kwok marks the pod Ready, but nothing answers yet: not Ready.
    kube.wait_for(lambda: serve_status(kube, ns).get("phase") == "Loading", 30, "phase Loading")
    log = tmp_path / "engine.log"
    kube.serve_container_log(ns, pod["metadata"]["name"], log)
    engine = Engine(pod, models_claim, log)
    try:
        engine.wait_healthy()
        kube.wait_for(lambda: serve_status(kube, ns).get("phase") == "Ready", 60, "phase Ready")
        st = serve_status(kube, ns)
        assert st["models"] == ["chat"] and st["readyReplicas"] == 1
        assert st["endpoint"] == f"http://chat.{ns}.svc:8000/v1"
        # `modelforge logs` on a serve: replica 0's engine, what the real engine printed so far.
        # Bytes, not text=True: universal newlines would turn a progress bar's \r into a line break.
        shown = subprocess.run([sys.executable, "-m", "modelforge.cli", "logs", "chat", "-n", ns, "--kind", "mserve"],
                               env={**os.environ, "KUBECONFIG": str(kube.kubeconfig)}, capture_output=True,
                               timeout=60, check=False)  # fmt: skip
        printed, said = shown.stdout.decode(errors="replace"), shown.stderr.decode(errors="replace")
        assert shown.returncode == 0 and f"==> pod {pod['metadata']['name']}, container engine" in said, said
        assert printed.strip() and log_text(log).startswith(printed), (printed[-1000:], log_text(log)[-1000:])

        kube.patch("ModelServe", ns, "chat", {"spec": {"replicas": 2}})
        kube.wait_for(lambda: (kube.get("Deployment", ns, "chat") or {}).get("status", {}).get("readyReplicas") == 2,
                      60, "2 ready replicas")  # fmt: skip
        kube.wait_for(lambda: serve_status(kube, ns).get("readyReplicas") == 2, 30, "readyReplicas 2 in status")

        before = {rs["metadata"]["name"] for rs in kube.list("ReplicaSet", ns)}
        kube.patch("ModelServe", ns, "chat", {"spec": {"maxModelLen": 256}})

        def rolled() -> bool:
            d = kube.get("Deployment", ns, "chat") or {}
            args = d["spec"]["template"]["spec"]["containers"][0]["args"]
            new = {rs["metadata"]["name"] for rs in kube.list("ReplicaSet", ns)} - before
            return "256" in args and bool(new) and d.get("status", {}).get("updatedReplicas") == 2

        kube.wait_for(rolled, 60, "the Deployment rolled to maxModelLen 256")
        assert any(e["reason"] == "Rolling" for e in kube.events(ns, "chat"))
    finally:
        engine.stop()


def test_from_finetunejob_waits_then_serves_its_output(kube: Kube, operator: OperatorProcess, ns: str) -> None:
    kube.claim(ns, "data")
    kube.claim(ns, "models")
    kube.create(finetunejob(ns, output={"claimName": "models", "merge": True}))
    pod = running_pods(kube, ns, "sft", 1, 1)[0]
    kube.create(serve(ns, model={"fromFineTuneJob": "sft"}))
    kube.wait_for(lambda: serve_status(kube, ns).get("phase") == "Pending", 30, "phase Pending")
    assert kube.get("Deployment", ns, "chat") is None, "no Deployment before the job has an output"
    waiting = next(c for c in serve_status(kube, ns)["conditions"] if c["type"] == "ModelAvailable")
    assert waiting["reason"] == "WaitingForModel", waiting
    outcome = {"outcome": "Succeeded", "reason": "Completed", "message": "trained", "last_step": 100,
               "total_steps": 100, "outputs": {"adapter": "pvc://models/sft/run/checkpoint-100",
                                               "mergedModel": "pvc://models/sft/merged"}}  # fmt: skip
    kube.finish_pod(ns, pod["metadata"]["name"], 0, message=outcome)
    deployment = kube.wait_for(lambda: kube.get("Deployment", ns, "chat"), 60, "the Deployment after success")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"{PVC_ROOT}/models/sft/merged" in args, args


def evaluated(base: float, tuned: float) -> dict[str, Any]:
    """A launcher's outcome with spec.evaluation's measurement, as launcher/run.py writes it (the typed contract)."""
    from modelforge.api.evaluation import EvaluationStatus
    from modelforge.launcher.outcome import Outcome

    measured = EvaluationStatus.model_validate({"rows": 20, "totalRows": 20, "partial": False, "seconds": 41.0,
                                                "metrics": [{"name": "rougeL", "base": base, "tuned": tuned}],
                                                "report": "pvc://models/sft/eval/report.md"})  # fmt: skip
    outcome = Outcome("Succeeded", "Completed", "trained 100 step(s)", exit_code=0, last_step=100, total_steps=100,
                      outputs={"adapter": "pvc://models/sft/run/checkpoint-100", "mergedModel": "pvc://models/sft/merged"},
                      evaluation=measured.to_wire())  # fmt: skip
    return json.loads(outcome.to_json())


GATE = {"datasets": [{"source": "pvc://data/eval.jsonl"}], "gate": {"metric": "rougeL", "minImprovement": 5}}


def test_an_evaluation_below_its_gate_promotes_nothing(kube: Kube, operator: OperatorProcess, ns: str,
                                                       kubeconfig: Path) -> None:  # fmt: skip
    """spec.evaluation's gate on the real API server: the job ends Succeeded with Promoted=False, kubectl shows
    the verdict (EVAL column, describe), spec.serve creates no ModelServe, and one naming the job waits."""
    kube.claim(ns, "data")
    kube.claim(ns, "models")
    kube.create(finetunejob(ns, output={"claimName": "models", "merge": True}, evaluation=GATE, serve={"name": "chat"}))
    pod = running_pods(kube, ns, "sft", 1, 1)[0]
    kube.create(serve(ns, name="by-hand", model={"fromFineTuneJob": "sft"}))
    kube.finish_pod(ns, pod["metadata"]["name"], 0, message=evaluated(30.0, 31.2))
    promoted = kube.wait_for(
        lambda: next((c for c in (kube.get("FineTuneJob", ns, "sft") or {}).get("status", {}).get("conditions", [])
                      if c["type"] == "Promoted"), None), 30, "the Promoted condition")  # fmt: skip
    assert (promoted["status"], promoted["reason"]) == ("False", "EvaluationBelowThreshold"), promoted
    assert "+1.2 over the base model (30) < minImprovement +5" in promoted["message"], promoted
    table = kubectl(kubeconfig, "get", "ftj", "sft", "-n", ns).stdout
    assert "EVAL" in table and "Succeeded" in table and "rougeL 31.2 (+1.2) fail" in table, table
    described = kubectl(kubeconfig, "describe", "ftj", "sft", "-n", ns).stdout
    assert "EvaluationBelowThreshold" in described and "Promoted" in described, described

    def not_promoted() -> dict[str, Any] | None:
        conditions = (kube.get("ModelServe", ns, "by-hand") or {}).get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "ModelAvailable" and c["reason"] == "NotPromoted"), None)

    waiting = kube.wait_for(not_promoted, 30, "the ModelServe waiting with NotPromoted")
    assert "FineTuneJob sft is not promoted" in waiting["message"], waiting
    events = {e["reason"] for e in kube.events(ns, "sft")}
    assert "EvaluationBelowThreshold" in events, events
    # Nothing was created for the output: the reconcile that wrote Promoted=False would have created it.
    assert kube.get("ModelServe", ns, "chat") is None and kube.get("Deployment", ns, "by-hand") is None
    assert "serveName" not in kube.get("FineTuneJob", ns, "sft")["status"]


def test_an_evaluation_that_passes_its_gate_serves(kube: Kube, operator: OperatorProcess, ns: str) -> None:
    kube.claim(ns, "data")
    kube.claim(ns, "models")
    kube.create(finetunejob(ns, output={"claimName": "models", "merge": True}, evaluation=GATE, serve={"name": "chat"}))
    pod = running_pods(kube, ns, "sft", 1, 1)[0]
    kube.finish_pod(ns, pod["metadata"]["name"], 0, message=evaluated(30.0, 41.0))
    created = kube.wait_for(lambda: kube.get("ModelServe", ns, "chat"), 30, "the ModelServe of spec.serve")
    assert created["spec"]["model"]["fromFineTuneJob"] == "sft"
    # The ModelServe is applied before the job's status is written: wait for that write.
    status = kube.wait_for(lambda: (kube.get("FineTuneJob", ns, "sft") or {}).get("status", {}).get("serveName")
                           and kube.get("FineTuneJob", ns, "sft")["status"], 30, "the job's status")  # fmt: skip
    promoted = next(c for c in status["conditions"] if c["type"] == "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("True", "EvaluationPassed"), promoted
    assert status["evaluation"]["summary"] == "rougeL 41 (+11) pass" and status["serveName"] == "chat"
    kube.wait_for(lambda: kube.get("Deployment", ns, "chat"), 60, "the serve's Deployment")


def test_children_follow_the_spec_and_hand_edits_are_reverted(kube: Kube, operator: OperatorProcess, ns: str,
                                                              kubeconfig: Path) -> None:  # fmt: skip
    """Server-side apply (field manager `modelforge`): a spec change reaches the Service, a hand edit of a
    field we own is put back on the next reconcile, and the API server records us as the manager."""
    kube.claim(ns, "models")
    kube.create(serve(ns))
    service = kube.wait_for(lambda: kube.get("Service", ns, "chat"), 30, "the Service")
    managers = {m["manager"] for m in service["metadata"]["managedFields"]}
    assert "modelforge" in managers, managers
    deployment = kube.get("Deployment", ns, "chat")
    assert "modelforge" in {m["manager"] for m in deployment["metadata"]["managedFields"]}

    def port() -> int:
        return int((kube.get("Service", ns, "chat") or {})["spec"]["ports"][0]["port"])

    kubectl(kubeconfig, "patch", "service", "chat", "-n", ns, "--type=json",
            "-p", '[{"op": "replace", "path": "/spec/ports/0/port", "value": 9999}]')  # fmt: skip
    assert port() == 9999
    kube.wait_for(lambda: port() == 8000, 30, "the hand-edited port put back to 8000")

    kube.patch("ModelServe", ns, "chat", {"spec": {"service": {"port": 8080, "type": "NodePort"}}})
    kube.wait_for(lambda: port() == 8080, 30, "service.port 8080 on the Service")
    assert kube.get("Service", ns, "chat")["spec"]["type"] == "NodePort"
    kube.wait_for(lambda: serve_status(kube, ns).get("endpoint") == f"http://chat.{ns}.svc:8080/v1", 30,
                  "the endpoint in status")  # fmt: skip
    generation = kube.get("Deployment", ns, "chat")["metadata"]["generation"]
    kube.wait_for(lambda: serve_status(kube, ns).get("observedGeneration") == 2, 30, "the change observed")
    # Reconciles are idempotent: applying the same Deployment again makes no new generation (no rollout).
    assert kube.get("Deployment", ns, "chat")["metadata"]["generation"] == generation


def test_a_running_job_named_failed_is_waited_for(kube: Kube, operator: OperatorProcess, ns: str) -> None:
    """The serve waits for a running FineTuneJob whatever its name (it used to look for "failed" in the text)."""
    kube.claim(ns, "data")
    kube.claim(ns, "models")
    kube.create(finetunejob(ns, name="failed-run"))
    running_pods(kube, ns, "failed-run", 1, 1)
    kube.create(serve(ns, model={"fromFineTuneJob": "failed-run"}))
    kube.wait_for(lambda: serve_status(kube, ns).get("phase"), 30, "a phase")
    assert serve_status(kube, ns)["phase"] == "Pending", serve_status(kube, ns)


@pytest.mark.parametrize("name", ["serve.v2", "s" * 72, "9lives"])
def test_a_name_its_service_cannot_take_is_refused_at_apply(kube: Kube, ns: str, name: str) -> None:
    """The object's name is its Service's (the endpoint's DNS name): refused by the CRD's rule, not later."""
    with pytest.raises(ApiException) as refused:
        kube.create(serve(ns, name=name))
    said = refused.value.body.decode() if isinstance(refused.value.body, bytes) else str(refused.value.body)
    assert refused.value.status == 422, said
    assert "metadata.name: a ModelServe's name is also its Service's" in said and "no dots" in said, said


def test_a_job_whose_serve_would_take_an_invalid_name_is_refused_before_any_pod(kube: Kube, operator: OperatorProcess,
                                                                                 claims: str) -> None:  # fmt: skip
    """spec.serve without a name takes the job's: refused before any GPU (InvalidSpec), not after training."""
    ns = claims
    kube.create(finetunejob(ns, name="job.v2", serve={}))

    def validated() -> dict[str, Any] | None:
        st = (kube.get("FineTuneJob", ns, "job.v2") or {}).get("status") or {}
        return next((c for c in st.get("conditions") or [] if c["type"] == "Validated"), None)

    refused = kube.wait_for(validated, 30, "the job judged")
    assert (refused["status"], refused["reason"]) == ("False", "InvalidSpec"), refused
    assert "spec.serve.name: the ModelServe of spec.serve takes the job's name, 'job.v2'" in refused["message"]
    assert kube.list("Job", ns) == []


def test_a_refused_child_write_reaches_the_conditions_in_the_servers_words(kube: Kube, operator: OperatorProcess,
                                                                          ns: str) -> None:  # fmt: skip
    """A ResourceQuota refuses the serve's Service: ChildrenApplied False, ChildRefused, with the API server's
    message, and a phase (never blank); once the quota is gone the operator's retry creates it."""
    kube.create({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-services", "namespace": ns},
                 "spec": {"hard": {"services": "0"}}})  # fmt: skip
    kube.wait_for(lambda: (kube.get("ResourceQuota", ns, "no-services") or {}).get("status", {}).get("hard"), 30,
                  "the quota's status")  # fmt: skip
    kube.create(serve(ns))

    def refused() -> dict[str, Any] | None:
        conditions = serve_status(kube, ns).get("conditions") or []
        return next((c for c in conditions if c["type"] == "ChildrenApplied" and c["status"] == "False"), None)

    said = kube.wait_for(refused, 30, "ChildrenApplied False")
    assert said["reason"] == "ChildRefused", said
    assert "exceeded quota: no-services" in said["message"] and "services=1" in said["message"], said
    assert serve_status(kube, ns)["phase"] == "Pending"
    assert kube.get("Service", ns, "chat") is None
    kube.delete("ResourceQuota", ns, "no-services")
    kube.wait_for(lambda: kube.get("Service", ns, "chat"), 90, "the Service, once the quota is gone")
    kube.wait_for(lambda: refused() is None, 30, "the refusal gone from the conditions")
