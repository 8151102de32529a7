"""Phase is derived from conditions in one place; pod trouble is read once for both kinds; decide_serve."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from modelforge.api.conditions import Reason
from modelforge.api.finetunejob import JobPhase
from modelforge.api.modelserve import ModelServeSpec, ModelServeStatus, ServePhase
from modelforge.plan.lifecycle import Observed, decide
from modelforge.plan.phases import job_phase, serve_phase
from modelforge.plan.pods import pod_trouble
from modelforge.plan.serving import ServeObserved, decide_serve

NOW = datetime(2026, 12, 1, 12, 0, 0)


def cond(kind: str, status: bool, reason: str = "") -> dict:
    return {"type": kind, "status": "True" if status else "False", "reason": reason, "message": ""}


@pytest.mark.parametrize(
    ("conditions", "phase"),
    [
        ([], JobPhase.PENDING),
        ([cond("Validated", True, "SpecValid")], JobPhase.PENDING),
        ([cond("Validated", False, "InvalidSpec")], JobPhase.FAILED),
        ([cond("Validated", True), cond("Running", False, "Starting")], JobPhase.STARTING),
        ([cond("Admitted", False, "Queued"), cond("Running", False, "Starting")], JobPhase.QUEUED),
        ([cond("Admitted", True, "Admitted"), cond("Running", False, "Starting")], JobPhase.STARTING),
        ([cond("Running", True, "Training")], JobPhase.RUNNING),
        ([cond("Running", False, "Restarting")], JobPhase.RESTARTING),
        ([cond("Running", False, "SpecChanged")], JobPhase.RESTARTING),
        ([cond("Running", False, "Unschedulable")], JobPhase.STARTING),
        ([cond("Running", False, "Suspended"), cond("Suspended", True, "Suspended")], JobPhase.SUSPENDED),
        ([cond("Running", False, "Completed"), cond("Succeeded", True, "Completed")], JobPhase.SUCCEEDED),
        ([cond("Running", False, "DataError"), cond("Failed", True, "DataError")], JobPhase.FAILED),
    ],
)
def test_job_phase_is_a_function_of_the_conditions(conditions, phase):
    assert job_phase(conditions) == phase


def test_a_stale_phase_is_never_read_back():
    """A status whose `phase` disagrees with its conditions is judged by the conditions."""
    from tests.launcher_specs import finetunejobs

    spec = finetunejobs()["tiny-cpu"]
    done = {"phase": "Running", "attempt": 1, "conditions": [cond("Succeeded", True, "Completed")]}
    d = decide(spec, [], done, Observed(), NOW)
    assert d.wire["phase"] == "Succeeded" and d.create_attempt is None and d.events == []


@pytest.mark.parametrize(
    ("conditions", "phase"),
    [
        ([], ServePhase.PENDING),
        ([cond("ModelAvailable", False, "WaitingForModel"), cond("Ready", False, "WaitingForModel")],
         ServePhase.PENDING),
        ([cond("ModelAvailable", False, "ModelFailed"), cond("Ready", False, "ModelFailed")], ServePhase.FAILED),
        ([cond("Ready", False, "InvalidSpec")], ServePhase.FAILED),
        ([cond("Ready", False, "OOMKilled")], ServePhase.FAILED),
        ([cond("Ready", False, "Loading")], ServePhase.LOADING),
        ([cond("Ready", False, "Unschedulable")], ServePhase.PENDING),
        ([cond("Ready", True, "Serving"), cond("Degraded", False, "Serving")], ServePhase.READY),
        ([cond("Ready", True, "Serving"), cond("Degraded", True, "AdapterMissing")], ServePhase.DEGRADED),
    ],
)  # fmt: skip
def test_serve_phase_is_a_function_of_the_conditions(conditions, phase):
    assert serve_phase(conditions) == phase


def pod(name: str, **status) -> dict:
    return {"metadata": {"name": name}, "status": status}


@pytest.mark.parametrize(
    ("pods", "reason"),
    [
        ((pod("a", phase="Running"),), None),
        ((pod("a", containerStatuses=[{"lastState": {"terminated": {"reason": "OOMKilled"}}}]),), "OOMKilled"),
        ((pod("a", containerStatuses=[{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]),), "CrashLoopBackOff"),
        ((pod("a", containerStatuses=[{"state": {"waiting": {"reason": "InvalidImageName"}}}]),), "ImagePullBackOff"),
        ((pod("a", containerStatuses=[{"state": {"waiting": {"reason": "ErrImagePull", "message": "no such"}}}]),),
         "ImagePullBackOff"),
        ((pod("a", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                "message": "0/3 nodes"}]),), "Unschedulable"),
    ],
)  # fmt: skip
def test_one_pod_trouble_reader_for_both_kinds(pods, reason):
    found = pod_trouble(pods)
    assert (found[0] if found else None) == reason
    if found:
        assert found[1].startswith("pod a")


def serve_spec(**extra) -> ModelServeSpec:
    return ModelServeSpec.model_validate({"model": {"fromFineTuneJob": "failed-run"}, **extra})


def test_decide_serve_waits_for_a_running_job_whatever_its_name():
    running = {"spec": {}, "status": {"phase": "Running"}}
    d = decide_serve("s", "ns", serve_spec(), [], {}, ServeObserved(jobs={"failed-run": running}), NOW, 3)
    assert isinstance(d.status, ModelServeStatus) and d.model is None
    assert d.wire["phase"] == "Pending" and d.wire["observedGeneration"] == 3
    assert all(c["observedGeneration"] == 3 for c in d.wire["conditions"])


def test_decide_serve_fails_when_the_job_failed():
    failed = {"spec": {}, "status": {"phase": "Failed"}}
    d = decide_serve("s", "ns", serve_spec(), [], {}, ServeObserved(jobs={"failed-run": failed}), NOW, 1)
    assert d.wire["phase"] == "Failed" and d.model is None
    assert d.events and d.events[0][:2] == ("Warning", "ModelFailed")
    again = decide_serve("s", "ns", serve_spec(), [], d.status, ServeObserved(jobs={"failed-run": failed}), NOW, 1)
    assert again.events == [] and again.wire == d.wire  # idempotent: nothing new to say or patch


def test_decide_serve_refuses_an_invalid_spec_with_the_problems():
    d = decide_serve("s", "ns", None, ["spec.replicas: must be >= 0"], {}, ServeObserved(), NOW, 1)
    assert d.wire["phase"] == "Failed" and "spec.replicas" in d.wire["conditions"][0]["message"]


def test_a_kueue_preempted_job_is_queued_again_not_running():
    from tests.launcher_specs import finetunejobs

    spec = finetunejobs()["tiny-cpu"]
    spec = spec.model_copy(update={"scheduling": type(spec).model_fields["scheduling"].annotation.__args__[0]
                                   .model_validate({"queueName": "team-a"})})  # fmt: skip
    running = {"attempt": 1, "startTime": "2026-12-01T11:00:00Z",
               "conditions": [cond("Admitted", True, "Admitted"), cond("Running", True, "Training")]}  # fmt: skip
    job = {"metadata": {"name": "tiny-cpu-a1"}, "spec": {"suspend": True}, "status": {}}
    d = decide(spec, [], running, Observed(job=job), NOW)
    # No Workload to read (Kueue's words in tests/unit/test_kueue.py): ours, and counted as a preemption.
    assert d.wire["phase"] == "Queued" and d.events and d.events[0][1] == "Preempted", (d.wire, d.events)
    assert d.wire["preemptions"] == 1 and not d.wire.get("restarts")


def test_a_spec_refused_mid_run_stops_the_attempt():
    from tests.launcher_specs import finetunejobs

    spec = finetunejobs()["tiny-cpu"]
    running = {"attempt": 2, "startTime": "2026-12-01T11:00:00Z", "conditions": [cond("Running", True, "Training")]}
    d = decide(spec, ["spec.resources: bad"], running, Observed(), NOW, 3)
    assert d.wire["phase"] == "Failed" and d.delete_attempt == 2


def test_a_status_without_conditions_keeps_its_stored_phase():
    from tests.launcher_specs import finetunejobs

    d = decide(finetunejobs()["tiny-cpu"], [], {"phase": "Succeeded", "attempt": 1}, Observed(), NOW)
    assert d.create_attempt is None and d.wire["phase"] == "Succeeded"


def test_serve_status_drops_what_the_replicas_no_longer_say():
    """models and adapters are said afresh: once nothing is ready they are gone, not left 'Loaded'."""
    spec = ModelServeSpec.model_validate({"model": {"source": "Qwen/Qwen3-8B"},
                                          "adapters": [{"name": "a", "source": "pvc://m/a"}]})  # fmt: skip
    old = {"models": ["s", "a"], "adapters": [{"name": "a", "state": "Loaded"}], "readyReplicas": 1}
    d = decide_serve("s", "ns", spec, [], old, ServeObserved({"status": {}}, ()), NOW, 1)
    assert "models" not in d.wire and d.wire["readyReplicas"] == 0, d.wire
    assert "without apiKeySecretRef" in json.dumps(d.wire["conditions"])  # the runtime LoRA API is open


def test_a_degraded_serve_posts_why():
    spec = ModelServeSpec.model_validate({"model": {"source": "Qwen/Qwen3-8B"}, "engine": "swift",
                                          "resources": {"gpusPerReplica": 0},
                                          "adapters": [{"name": "a", "source": "pvc://m/a"}]})  # fmt: skip
    ready = {"metadata": {"name": "p"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    d = decide_serve("s", "ns", spec, [], {}, ServeObserved({"status": {"readyReplicas": 1}}, (ready,), ("s",)), NOW)
    assert d.wire["phase"] == "Degraded"
    assert d.events[0][:2] == ("Warning", "AdapterMissing") and "does not list a" in d.events[0][2], d.events


def test_a_failed_init_step_is_named_with_its_last_words():
    SAID = "modelforge chat-template: /m has no chat template"
    pod = {"metadata": {"name": "s-1"}, "status": {"initContainerStatuses": [{
        "name": "chat-template", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "message": SAID}}}]}}  # fmt: skip
    reason, message = pod_trouble((pod,))
    assert reason == Reason.CRASH_LOOP_BACK_OFF
    assert message == f"pod s-1: its chat-template step failed: {SAID}"


def test_an_adapters_file_the_agent_cannot_read_is_said_in_status():
    spec = ModelServeSpec.model_validate({"model": {"source": "pvc://m/base"},
                                          "apiKeySecretRef": {"name": "k", "key": "k"},
                                          "adapters": [{"name": "a", "source": "pvc://m/a"}]})  # fmt: skip
    ready = {"metadata": {"name": "p"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    report = {"engineReady": True, "models": ["s", "a"], "adapters": [{"name": "a", "state": "Loaded"}],
              "problem": "/etc/modelforge/adapters/adapters.json: cannot read the desired adapters (x)"}  # fmt: skip
    d = decide_serve("s", "ns", spec, [], {}, ServeObserved({"status": {"readyReplicas": 1}}, (ready,),
                                                            agent_reports=(report,)), NOW, 1)  # fmt: skip
    assert d.wire["phase"] == "Ready", d.wire
    assert "serve agent: /etc/modelforge/adapters/adapters.json: cannot read" in json.dumps(d.wire["conditions"])


def test_a_refused_write_is_said_beside_the_lifecycles_conditions_never_instead_of_them():
    from datetime import datetime

    from modelforge.plan.phases import refused_status, without_refusals

    now = datetime(2026, 12, 7, 9, 0, 0)
    restarting = {"phase": "Restarting", "attempt": 1, "conditions": [cond("Running", False, "Restarting")]}
    said = refused_status("FineTuneJob", restarting, 'configmaps "sft-a2" is forbidden: exceeded quota', now, 3)
    assert said["phase"] == "Restarting"  # the lifecycle's state is untouched: attempt 2 is still what comes next
    refusal = next(c for c in said["conditions"] if c["type"] == "ChildrenApplied")
    assert (refusal["status"], refusal["reason"]) == ("False", "ChildRefused")
    assert "exceeded quota" in refusal["message"]
    assert job_phase(said["conditions"]) == JobPhase.RESTARTING
    assert without_refusals(said["conditions"]) == restarting["conditions"]
    fresh = refused_status("ModelServe", {}, 'services "chat" is forbidden', now, 1)
    assert fresh["phase"] == "Pending"  # never a blank phase
