"""The real Kueue (built from sigs.k8s.io/kueue, tests/cluster/kueue.py) decides which FineTuneJobs run, on the
real control plane: admission in priority order, Kueue's own words in our status and `kubectl get ftj`, no pod
before admission, all nodes of a multi-node job admitted together (borrowing from a cohort), and preemption
that loses at most one step: the preempted job's trainer (a real `modelforge launch` of the tiny model, run
for its pod as a kubelet would, tests/cluster/test_story.py) saves a checkpoint on SIGTERM and, when Kueue
readmits the job, resumes from it. Nothing in these tests unsuspends a Job: only Kueue does."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelforge.testing import build_tiny_model, write_chat_dataset

from . import kueue as kueue_harness
from .kube import KUBECTL, ROOT, Kube
from .operator import OperatorProcess
from .test_example_commands import commands
from .test_finetunejob import condition, finetunejob, pods_of, running_pods, status
from .test_story import start_training_pod, termination_message

GPU = "nvidia.com/gpu"
PRIORITIES = {"mf-low": 100, "mf-high": 1000}


@pytest.fixture(scope="module")
def kueue(kube: Kube) -> Iterator[None]:
    """Kueue running for this module only: its webhooks are removed and it is stopped after."""
    try:
        kueue_harness.up()
    except SystemExit as exc:
        pytest.fail(f"Kueue did not start: {exc}", pytrace=False)
    for name, value in PRIORITIES.items():
        if kube.get("WorkloadPriorityClass", None, name) is None:
            kube.create({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
                         "metadata": {"name": name}, "value": value,
                         "description": f"ModelForge tests: {name}"})  # fmt: skip
    if kube.get("ResourceFlavor", None, "gpu") is None:
        kube.create({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "gpu"}})
    yield
    kueue_harness.down()


def cluster_queue(name: str, gpus: int, cohort: str | None = None, borrowing: int | None = None) -> dict[str, Any]:
    gpu: dict[str, Any] = {"name": GPU, "nominalQuota": str(gpus)}
    if borrowing is not None:
        gpu["borrowingLimit"] = str(borrowing)
    spec: dict[str, Any] = {
        "namespaceSelector": {},
        "preemption": {"withinClusterQueue": "LowerPriority", "reclaimWithinCohort": "Any"},
        "resourceGroups": [{"coveredResources": ["cpu", "memory", GPU], "flavors": [{"name": "gpu", "resources": [
            {"name": "cpu", "nominalQuota": "1000"}, {"name": "memory", "nominalQuota": "10Ti"}, gpu]}]}],
    }  # fmt: skip
    if cohort:
        spec["cohortName"] = cohort
    return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def queues(kube: Kube, kueue: None, claims: str) -> Iterator[list[str]]:
    """The ClusterQueues a test makes (cluster-scoped, named after its namespace); deleted after it, while
    Kueue still runs (Kueue holds a finalizer on each until nothing uses it)."""
    made: list[str] = []
    yield made
    for fj in kube.list("FineTuneJob", claims):
        kube.delete("FineTuneJob", claims, fj["metadata"]["name"])
    for name in made:
        kube.delete("ClusterQueue", None, name)


def local_queue(kube: Kube, ns: str, cq: str, name: str = "team") -> str:
    kube.create({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                 "metadata": {"name": name, "namespace": ns}, "spec": {"clusterQueue": cq}})  # fmt: skip
    return name


def queued(ns: str, name: str, priority: str, gpus: int = 8, nodes: int = 1, **spec: Any) -> dict[str, Any]:
    return finetunejob(ns, name, scheduling={"queueName": "team", "priorityClass": priority},
                       resources={"nodes": nodes, "gpusPerNode": gpus}, **spec)  # fmt: skip


def admitted(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return condition(kube, ns, "Admitted", name)


@contextlib.contextmanager
def explained(kube: Kube, ns: str) -> Iterator[None]:
    """On a timeout, what Kueue says of every Workload in the namespace (its conditions), to read the failure."""
    try:
        yield
    except AssertionError as exc:
        said = {w["metadata"]["name"]: [(c["type"], c["status"], c.get("reason"), c.get("message", "")[:160])
                                        for c in (w.get("status") or {}).get("conditions") or []]
                for w in kube.list("Workload", ns)}  # fmt: skip
        raise AssertionError(f"{exc}\nKueue's Workloads: {json.dumps(said, indent=1)}") from None


def kubectl_get_ftj(kube: Kube, ns: str) -> dict[str, str]:
    """`kubectl get ftj` as a user runs it: each job's row, by name."""
    out = subprocess.run([str(KUBECTL), "--kubeconfig", str(kube.kubeconfig), "get", "ftj", "-n", ns],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return {line.split()[0]: line for line in out.splitlines()[1:]}


def test_admitted_in_priority_order_queued_in_kueues_words_and_preempted(
    kube: Kube, operator: OperatorProcess, claims: str, queues: list[str]
) -> None:
    ns = claims
    cq = f"cq-{ns}"
    kube.create(cluster_queue(cq, gpus=8))
    queues.append(cq)
    local_queue(kube, ns, cq)

    kube.create(queued(ns, "first", "mf-low"))
    job = kube.wait_for(lambda: kube.get("Job", ns, "first-a1"), 30, "first's Job")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "mf-low"
    running_pods(kube, ns, "first", 1, 1)  # Kueue admitted it: it unsuspended the Job, nothing of ours did
    kube.wait_for(lambda: admitted(kube, ns, "first").get("status") == "True", 30, "first Admitted")

    # Over quota: Queued, in Kueue's words, and no pod at all.
    kube.create(queued(ns, "second", "mf-low"))
    said = kube.wait_for(lambda: (a := admitted(kube, ns, "second")).get("reason") == "Pending" and a, 60,
                         "second Queued with Kueue's reason")  # fmt: skip
    assert status(kube, ns, "second")["phase"] == "Queued"
    assert f"insufficient unused quota for {GPU} in flavor gpu, 8 more needed" in said["message"], said
    assert not pods_of(kube, ns, "second", 1), "a job Kueue has not admitted must have no pods"
    row = kubectl_get_ftj(kube, ns)["second"]
    assert "Queued" in row and "Pending" in row, row

    # A higher priority arrives: Kueue preempts `first` (ours: Queued, reason Preempted, Kueue's message) and
    # admits `urgent` ahead of `second`, which was waiting before it.
    kube.create(queued(ns, "urgent", "mf-high"))
    said = kube.wait_for(lambda: (a := admitted(kube, ns, "first")).get("reason") == "Preempted" and a, 60,
                         "first preempted")  # fmt: skip
    assert said["status"] == "False" and said["message"].startswith("Preempted to accommodate a workload"), said
    kube.wait_for(lambda: not pods_of(kube, ns, "first", 1), 60, "first's pods gone")
    running_pods(kube, ns, "urgent", 1, 1)
    first = status(kube, ns, "first")
    assert first["phase"] == "Queued" and first["preemptions"] == 1 and not first.get("restarts"), first
    assert first["attempt"] == 1  # the same Job waits in the queue; no new attempt
    assert admitted(kube, ns, "second").get("status") == "False"
    assert "Preempted" in kubectl_get_ftj(kube, ns)["first"]
    reasons = [e["reason"] for e in kube.events(ns, "first")]
    assert "Preempted" in reasons, reasons
    # One admission per attempt: exactly one Workload for each Job, Kueue's, owned by that Job (the operator
    # makes none and unsuspends nothing).
    owners = sorted(o["name"] for w in kube.list("Workload", ns) for o in w["metadata"].get("ownerReferences", [])
                    if o["kind"] == "Job")  # fmt: skip
    assert owners == ["first-a1", "second-a1", "urgent-a1"], owners

    # `second` gives up its place and `urgent` is done (both deleted): Kueue readmits the preempted `first` by
    # itself (with both waiting, Kueue's FIFO would order them by creation or eviction time, its setting):
    # the same Job, attempt 1, gets a new pod.
    kube.delete("FineTuneJob", ns, "second")
    kube.delete("FineTuneJob", ns, "urgent")
    with explained(kube, ns):
        running_pods(kube, ns, "first", 1, 1)
    kube.wait_for(lambda: admitted(kube, ns, "first").get("status") == "True", 30, "first Admitted again")
    first = status(kube, ns, "first")
    assert first["attempt"] == 1 and first["preemptions"] == 1 and not first.get("restarts"), first


def test_a_multi_node_job_is_admitted_whole_and_borrows_from_its_cohort(
    kube: Kube, operator: OperatorProcess, claims: str, queues: list[str]
) -> None:
    ns = claims
    team_a, team_b, cohort = f"a-{ns}", f"b-{ns}", f"co-{ns}"
    kube.create(cluster_queue(team_a, gpus=8, cohort=cohort, borrowing=8))
    queues.append(team_a)
    local_queue(kube, ns, team_a)
    kube.create(queued(ns, "big", "mf-low", gpus=8, nodes=2))
    # 16 GPUs asked, 8 in the team's quota and nobody to borrow from: not one pod (never half a gang).
    said = kube.wait_for(lambda: (a := admitted(kube, ns, "big")).get("status") == "False" and a.get("reason")
                         not in (None, "Queued") and a, 60, "big Queued in Kueue's words")  # fmt: skip
    assert GPU in said["message"], said
    time.sleep(2)  # Kueue's scheduler has had its turns: still nothing may start
    assert not pods_of(kube, ns, "big", 1) and kube.get("Job", ns, "big-a1")["spec"]["suspend"] is True
    # Team B joins the cohort with 8 GPUs it does not use: team A borrows them, both nodes start together.
    kube.create(cluster_queue(team_b, gpus=8, cohort=cohort))
    queues.append(team_b)
    pods = running_pods(kube, ns, "big", 1, 2)
    assert {p["spec"]["nodeName"] for p in pods} == {"gpu-node-0", "gpu-node-1"}
    kube.wait_for(lambda: admitted(kube, ns, "big").get("status") == "True", 30, "big Admitted")


STEPS = 24


def test_preempted_training_saves_its_step_and_resumes_there_when_readmitted(
    kube: Kube, operator: OperatorProcess, claims: str, queues: list[str], tmp_path: Path
) -> None:
    """A real tiny fine-tune, preempted mid-run by a higher-priority job: its trainer gets SIGTERM (the Job
    controller deletes the pod Kueue suspended) and saves a checkpoint at the step it reached; readmitted, the
    same Job's new pod resumes from it. Steps lost <= 1; the times are printed for docs/benchmarks.md."""
    ns = claims
    cq = f"cq-{ns}"
    kube.create(cluster_queue(cq, gpus=1))
    queues.append(cq)
    local_queue(kube, ns, cq)
    volumes = tmp_path / "volumes"
    build_tiny_model(volumes / "models" / "tiny")
    write_chat_dataset(volumes / "data" / "chat.jsonl")
    kube.create(queued(ns, "tuned", "mf-low", gpus=1,
                       model={"source": "pvc://models/tiny", "modelType": "qwen3", "template": "qwen3"},
                       hyperparameters={"maxSteps": STEPS, "learningRate": 5e-3, "batchSizePerDevice": 4,
                                        "maxLength": 256, "loggingSteps": 1, "dtype": "float32"},
                       checkpointing={"saveSteps": 1000}))  # fmt: skip
    pod = running_pods(kube, ns, "tuned", 1, 1)[0]
    log = tmp_path / "pod.log"
    container, termination = start_training_pod(kube, ns, pod, volumes, tmp_path, log)
    try:
        kube.wait_for(lambda: ((status(kube, ns, "tuned").get("progress") or {}).get("step") or 0) >= 4, 300,
                      "the trainer past step 4 (status.progress)")  # fmt: skip
        t_preempt = time.monotonic()
        kube.create(queued(ns, "urgent", "mf-high", gpus=1))
        # The kubelet's part: the pod Kueue's suspend made the Job controller delete gets SIGTERM.
        kube.wait_for(lambda: (p := kube.get("Pod", ns, pod["metadata"]["name"])) is None
                      or p["metadata"].get("deletionTimestamp"), 60, "the preempted pod deleted")  # fmt: skip
        t_deleted = time.monotonic()
        container.proc.send_signal(15)
        code = container.proc.wait(120)
        t_saved = time.monotonic()
    finally:
        container.stop()
    outcome = json.loads(termination.read_text())  # the launcher's outcome, as the kubelet would pass it on
    assert code == 75 and outcome["outcome"] == "Failed" and outcome["retryable"], outcome
    saved_step, reached = int(outcome["last_checkpoint"].rsplit("-", 1)[1]), int(outcome["last_step"])
    assert reached - saved_step <= 1, outcome  # steps lost
    said = kube.wait_for(lambda: (a := admitted(kube, ns, "tuned")).get("reason") == "Preempted" and a, 60,
                         "tuned Queued, reason Preempted")  # fmt: skip
    assert "Preempted to accommodate a workload" in said["message"]
    running_pods(kube, ns, "urgent", 1, 1)

    # The urgent job is done: Kueue readmits `tuned`; the same Job's new pod resumes from the checkpoint.
    kube.delete("FineTuneJob", ns, "urgent")
    t_freed = time.monotonic()
    second = kube.wait_for(lambda: next((p for p in pods_of(kube, ns, "tuned", 1)
                                         if p["metadata"]["uid"] != pod["metadata"]["uid"]
                                         and p.get("status", {}).get("phase") == "Running"), None), 120,
                           "tuned readmitted: a new pod running")  # fmt: skip
    t_readmitted = time.monotonic()
    log2 = tmp_path / "pod2.log"
    container, termination = start_training_pod(kube, ns, second, volumes, tmp_path, log2)
    try:
        resumed = kube.wait_for(lambda: (s := status(kube, ns, "tuned").get("progress") or {}).get("resumedFrom")
                                and (s.get("step") or 0) > saved_step and s, 300,
                                "the resumed trainer past its checkpoint")  # fmt: skip
        t_resumed = time.monotonic()
        code = container.proc.wait(600)
    finally:
        container.stop()
    message = termination_message(code, termination, log2)
    assert code == 0, message
    kube.finish_pod(ns, second["metadata"]["name"], 0, message=message)
    try:
        kube.wait_for(lambda: status(kube, ns, "tuned").get("phase") == "Succeeded", 60, "tuned Succeeded")
    except AssertionError as exc:
        job = (kube.get("Job", ns, "tuned-a1") or {}).get("status")
        raise AssertionError(f"{exc}\nstatus: {status(kube, ns, 'tuned')}\nJob: {job}") from None
    final = status(kube, ns, "tuned")
    assert resumed["resumedFrom"].endswith(f"checkpoint-{saved_step}"), resumed
    assert final["preemptions"] == 1 and not final.get("restarts") and final["attempt"] == 1, final
    # Measured: the resumed run sometimes logs one step more than maxSteps (25/24); the operator caps its percent.
    assert final["progress"]["step"] >= STEPS, final["progress"]
    print(
        f"\n[kueue preemption] reached step {reached}, checkpoint-{saved_step} saved (steps lost "
        f"{reached - saved_step}); preemptor created -> pod deleted {t_deleted - t_preempt:.1f} s; SIGTERM -> "
        f"checkpoint saved, exit 75 {t_saved - t_deleted:.1f} s; quota freed -> readmitted, new pod running "
        f"{t_readmitted - t_freed:.1f} s; new pod -> a step past the checkpoint {t_resumed - t_readmitted:.1f} s"
    )


EXAMPLE = ROOT / "examples" / "kueue-two-teams"


def test_the_two_teams_example_borrows_then_gives_back_as_its_readme_says(
    kube: Kube, kubeconfig: Path, operator: OperatorProcess, kueue: None
) -> None:
    """examples/kueue-two-teams with its README's commands, as the cluster admin: team A's two-node job borrows
    team B's idle GPUs; team B's job takes them back (Kueue preempts team A's, which waits, Preempted)."""
    lines = commands(EXAMPLE / "README.md")
    assert [line.split()[-1] for line in lines] == ["queues.yaml", "team-a", "team-a.yaml", "team-b", "team-b.yaml"]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{KUBECTL.parent}:{os.environ['PATH']}"}

    def run(line: str) -> None:
        done = subprocess.run(["bash", "-c", line], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"`{line}` failed:\n{done.stderr}"

    try:
        for line in lines[:3]:
            run(line)
        kube.wait_for(lambda: admitted(kube, "team-a", "big-lora").get("status") == "True", 60,
                      "team A's 16-GPU job admitted (8 of them borrowed)")  # fmt: skip
        assert len(pods_of(kube, "team-a", "big-lora", 1)) == 2  # both nodes at once
        for line in lines[3:]:
            run(line)
        kube.wait_for(lambda: admitted(kube, "team-b", "urgent-lora").get("status") == "True", 60,
                      "team B's job admitted: its quota reclaimed")  # fmt: skip
        said = admitted(kube, "team-a", "big-lora")
        assert said["reason"] == "Preempted" and "Preempted to accommodate a workload" in said["message"], said
        assert status(kube, "team-a", "big-lora")["preemptions"] == 1
    finally:
        for ns in ("team-a", "team-b"):
            for fj in kube.list("FineTuneJob", ns):
                kube.delete("FineTuneJob", ns, fj["metadata"]["name"])
            kube.delete("Namespace", None, ns)
        kube.wait_for(lambda: all(kube.get("Namespace", None, ns) is None for ns in ("team-a", "team-b")), 120,
                      "the example's namespaces gone")  # fmt: skip
        for doc in yaml.safe_load_all((EXAMPLE / "queues.yaml").read_text()):
            kube.delete(doc["kind"], None, doc["metadata"]["name"])
