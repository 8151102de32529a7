"""The FineTuneJob lifecycle, table-tested: the controller only observes and applies these decisions."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from modelforge.api.finetunejob import FineTuneJobStatus, JobPhase
from modelforge.plan.lifecycle import Observed, decide, pod_failure_cause, progress_status, timestamp
from tests.launcher_specs import finetunejobs

NOW = datetime(2026, 11, 23, 12, 0, 0)
JOBS = finetunejobs()


def spec(name: str = "tiny-cpu", **changes):
    s = JOBS[name].model_copy(deep=True)
    for key, value in changes.items():
        target = s
        *path, last = key.split("__")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return s


def pod(phase: str, index: int = 0, **status) -> dict:
    return {
        "metadata": {"name": f"tiny-a1-{index}-x", "labels": {"batch.kubernetes.io/job-completion-index": str(index)}},
        "status": {"phase": phase, **status},
    }


def terminated(phase: str, outcome: dict | None = None, reason: str = "Error", code: int = 1) -> dict:
    state = {"terminated": {"exitCode": code, "reason": reason, "message": json.dumps(outcome) if outcome else ""}}
    return pod(phase, containerStatuses=[{"name": "trainer", "state": state}])


JOB = {"metadata": {"name": "tiny-a1"}, "spec": {}, "status": {}}
RUNNING_STATUS = {"phase": "Running", "attempt": 1, "startTime": timestamp(NOW - timedelta(minutes=5))}


def conditions(status) -> dict[str, tuple[str, str]]:
    status = status if isinstance(status, dict) else status.to_wire()
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


def test_new_job_starts_attempt_one():
    d = decide(spec(), [], {}, Observed(), NOW, generation=1)
    assert d.create_attempt == 1 and d.delete_attempt is None
    assert (d.wire["phase"], d.wire["attempt"], d.wire["gpus"]) == ("Starting", 1, 1)
    assert d.wire["startTime"] == timestamp(NOW) and d.wire["observedGeneration"] == 1
    assert conditions(d.status)["Validated"] == ("True", "SpecValid")
    assert d.events == [("Normal", "Starting", "attempt 1: creating 1 pod(s) x 1 GPU(s)")]


def test_invalid_spec_fails_before_any_pod():
    d = decide(spec(), ["spec.x: bad"], {}, Observed(), NOW)
    assert d.create_attempt is None and d.wire["phase"] == "Failed"
    assert conditions(d.status)["Validated"] == ("False", "InvalidSpec")
    assert d.events[0][0] == "Warning"


def test_a_cluster_job_needs_an_output_claim():
    d = decide(spec(output=None), [], {}, Observed(), NOW)
    assert d.create_attempt is None and d.wire["phase"] == "Failed"
    assert "spec.output: required on a cluster" in conditions_message(d.status, "Validated")


def test_plan_error_fails_with_the_field():
    bad = spec("qwen3-30b-a3b-full-5gpu", hyperparameters__global_batch_size=7)
    d = decide(bad, [], {}, Observed(), NOW)
    assert d.wire["phase"] == "Failed" and "globalBatchSize 7" in conditions_message(d.status, "Failed")
    assert d.wire["completionTime"] == timestamp(NOW)  # a finished job says when it finished


def conditions_message(status, kind: str) -> str:
    status = status if isinstance(status, dict) else status.to_wire()
    return next(c["message"] for c in status["conditions"] if c["type"] == kind)


def test_queued_in_kueue():
    s = spec("multinode-lora-kueue")
    first = decide(s, [], {}, Observed(), NOW)
    assert first.wire["phase"] == "Queued"
    d = decide(s, [], first.status, Observed(job={**JOB, "spec": {"suspend": True}}), NOW)
    assert d.wire["phase"] == "Queued" and conditions(d.status)["Admitted"] == ("False", "Queued")
    assert "gpu-team-a" in conditions_message(d.status, "Admitted")


def test_unschedulable_carries_the_scheduler_message():
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    waiting = pod("Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                          "message": message}])  # fmt: skip
    d = decide(spec(), [], {**RUNNING_STATUS, "phase": "Starting"}, Observed(JOB, (waiting,)), NOW)
    assert d.wire["phase"] == "Starting"
    assert conditions(d.status)["Running"] == ("False", "Unschedulable")
    assert message in conditions_message(d.status, "Running")
    assert d.events[0][:2] == ("Warning", "Unschedulable")
    again = decide(spec(), [], d.status, Observed(JOB, (waiting,)), NOW)
    assert again.events == []  # no event storm on every tick


def test_image_pull_back_off():
    waiting = pod("Pending", containerStatuses=[{"image": "bad:tag", "state": {"waiting": {
        "reason": "ImagePullBackOff", "message": 'Back-off pulling image "bad:tag"'}}}])  # fmt: skip
    d = decide(spec(), [], {**RUNNING_STATUS, "phase": "Starting"}, Observed(JOB, (waiting,)), NOW)
    assert conditions(d.status)["Running"] == ("False", "ImagePullBackOff")


def test_running_with_progress():
    progress = {"step": 12, "total_steps": 40, "percent": 30.0, "summary": "12/40 (30%)", "loss": 1.5,
                "tokens_per_second": 900.0, "eta": "1m00s", "finished": False}  # fmt: skip
    d = decide(spec(), [], {**RUNNING_STATUS, "phase": "Starting"}, Observed(JOB, (pod("Running"),), progress), NOW)
    assert d.wire["phase"] == "Running"
    assert d.wire["progress"] == {"step": 12, "totalSteps": 40, "percent": 30.0, "summary": "12/40 (30%)",
                                    "loss": 1.5, "tokensPerSecond": 900.0, "eta": "1m00s",
                                    "readAt": timestamp(NOW)}  # fmt: skip
    assert conditions(d.status)["Running"] == ("True", "Training")


def test_running_pods_without_a_progress_report_say_so():
    """Pods running but rank 0's /progress never answered: no claim of training nobody has seen."""
    d = decide(spec(), [], {**RUNNING_STATUS, "phase": "Starting"}, Observed(JOB, (pod("Running"),)), NOW)
    assert "pods running, no progress reported yet" in conditions_message(d.status, "Running")
    progress = {"step": 12, "total_steps": 40, "percent": 30.0, "summary": "12/40 (30%)", "finished": False}
    seen = decide(spec(), [], d.wire, Observed(JOB, (pod("Running"),), progress), NOW)
    assert conditions_message(seen.status, "Running").endswith(", 12/40 (30%)")
    lost = decide(spec(), [], seen.wire, Observed(JOB, (pod("Running"),)), NOW)
    assert "did not answer this time (last reported: 12/40 (30%))" in conditions_message(lost.status, "Running")


def test_progress_silent_past_the_stall_timeout_is_a_warning_condition_until_it_answers():
    """ProgressReported=False (one warning event) once rank 0's /progress, having answered in this attempt, has
    not answered for longer than stallTimeoutSeconds since the operator's last read; True again when it answers;
    gone when the timeout is turned off and when the attempt stops running."""
    job = spec(failure_policy__stall_timeout_seconds=600)
    progress = {"step": 12, "total_steps": 40, "summary": "12/40 (30%)"}
    reported = decide(job, [], {**RUNNING_STATUS, "phase": "Starting"}, Observed(JOB, (pod("Running"),), progress),
                      NOW)  # fmt: skip
    assert reported.wire["progress"]["readAt"] == timestamp(NOW)
    silent = Observed(JOB, (pod("Running"),))
    # readAt may lag the last answer by up to a minute (an unchanged report is re-recorded once a minute): the
    # warning counts that minute on top of the timeout, so it is never early.
    within = decide(job, [], reported.wire, silent, NOW + timedelta(seconds=660))
    assert "ProgressReported" not in conditions(within.status) and within.events == []
    lapsed = decide(job, [], within.wire, silent, NOW + timedelta(seconds=661))
    assert conditions(lapsed.status)["ProgressReported"] == ("False", "NoProgressReport")
    said = conditions_message(lapsed.status, "ProgressReported")
    assert "has been silent for longer than failurePolicy.stallTimeoutSeconds (600 s) (its last answer recorded " \
           f"at {timestamp(NOW)}); its last report: 12/40 (30%)" in said, said  # fmt: skip
    assert lapsed.events == [("Warning", "NoProgressReport", said)]
    assert lapsed.wire["phase"] == "Running"  # a warning, not a failure: the launcher's watchdog judges steps
    again = decide(job, [], lapsed.wire, silent, NOW + timedelta(seconds=700))
    assert again.events == [] and conditions_message(again.status, "ProgressReported") == said  # said once, stable
    back = decide(job, [], again.wire, Observed(JOB, (pod("Running"),), progress), NOW + timedelta(seconds=710))
    assert conditions(back.status)["ProgressReported"] == ("True", "ProgressResumed")
    assert conditions_message(back.status, "ProgressReported") == "rank 0's /progress answers again (step 12)"
    # Silent again: counted from the last read (at 710 s), not from when the pods started.
    quiet = decide(job, [], back.wire, silent, NOW + timedelta(seconds=1370))
    assert conditions(quiet.status)["ProgressReported"] == ("True", "ProgressResumed")
    stale = decide(job, [], quiet.wire, silent, NOW + timedelta(seconds=1371))
    assert conditions(stale.status)["ProgressReported"] == ("False", "NoProgressReport")
    assert [e[1] for e in stale.events] == ["NoProgressReport"]
    # The watchdog turned off while it warns: the warning goes. An attempt that stops running takes it too.
    off = decide(spec(failure_policy__stall_timeout_seconds=0), [], stale.wire, silent, NOW + timedelta(days=1))
    assert "ProgressReported" not in conditions(off.status)
    ended = Observed(JOB, (terminated("Succeeded", code=0),))
    done = decide(job, [], stale.wire, ended, NOW + timedelta(seconds=1400))
    assert done.wire["phase"] != "Running" and "ProgressReported" not in conditions(done.status)


def test_an_unchanged_report_does_not_rewrite_read_at_on_every_poll():
    """readAt is refreshed for a new report at once, for the same report once a minute (a quarter of the stall
    timeout when that is shorter): a job in a long evaluation costs no status write per poll."""
    progress = {"step": 12, "total_steps": 40, "summary": "12/40 (30%)"}
    running = Observed(JOB, (pod("Running"),), progress)
    first = decide(spec(), [], {**RUNNING_STATUS, "phase": "Starting"}, running, NOW)
    same = decide(spec(), [], first.wire, running, NOW + timedelta(seconds=59))
    assert same.wire == first.wire  # nothing to write
    refreshed = decide(spec(), [], same.wire, running, NOW + timedelta(seconds=60))
    assert refreshed.wire["progress"]["readAt"] == timestamp(NOW + timedelta(seconds=60))
    moved = Observed(JOB, (pod("Running"),), {**progress, "step": 13, "summary": "13/40 (32%)"})
    stepped = decide(spec(), [], first.wire, moved, NOW + timedelta(seconds=3))
    assert stepped.wire["progress"]["readAt"] == timestamp(NOW + timedelta(seconds=3))
    short = spec(failure_policy__stall_timeout_seconds=20)
    quick = decide(short, [], first.wire, running, NOW + timedelta(seconds=5))
    assert quick.wire["progress"]["readAt"] == timestamp(NOW + timedelta(seconds=5))
    # The same report until 59 s, then silence: readAt says 0 s, the last answer was at 59 s; the warning waits
    # for the timeout plus that minute, so the silence it reports is at least the timeout.
    job = spec(failure_policy__stall_timeout_seconds=600)
    seen = decide(job, [], {**RUNNING_STATUS, "phase": "Starting"}, running, NOW)
    seen = decide(job, [], seen.wire, running, NOW + timedelta(seconds=59))
    assert seen.wire["progress"]["readAt"] == timestamp(NOW)
    silent = Observed(JOB, (pod("Running"),))
    early = decide(job, [], seen.wire, silent, NOW + timedelta(seconds=59 + 600))
    assert "ProgressReported" not in conditions(early.status)
    late = decide(job, [], early.wire, silent, NOW + timedelta(seconds=661))
    assert conditions(late.status)["ProgressReported"] == ("False", "NoProgressReport")


@pytest.mark.parametrize(
    "outcome",
    [
        {"outputs": {"adapter": "pvc://models/x/run/checkpoint-40", "evalReport": "pvc://models/x/eval.json"}},
        {"outputs": {"adapter": ["not", "a", "path"], "model": 7}, "last_checkpoint": {"step": 3}},
        {"outputs": "pvc://models/x", "last_step": "40", "total_steps": True},
        {"last_step": 40, "total_steps": -1, "outputs": {"adapter": "x" * 4096}},
        {"garbage": "x" * 4096, "outputs": {"adapter": "pvc://models/x/run/checkpoint-40"}, "finished": "yes"},
    ],
    ids=["a-newer-launchers-extra-output", "wrong-types", "strings-for-numbers", "out-of-range", "unknown-keys"],
)
def test_an_outcome_of_another_launcher_version_never_breaks_the_reconcile(outcome):
    """A trainer image of another version (or a user's own) writes keys or types this operator does not know:
    the known, well-typed parts reach status, the rest is dropped, and the status stays valid."""
    outcome = {"outcome": "Succeeded", "reason": "Completed", "message": "trained", **outcome}
    done = {**JOB, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    d = decide(spec(), [], RUNNING_STATUS, Observed(done, (terminated("Succeeded", outcome, "Completed", 0),)), NOW)
    FineTuneJobStatus.model_validate(d.wire)  # what the operator writes must be a valid status
    assert d.wire["phase"] == "Succeeded", d.wire
    outputs = d.wire.get("outputs") or {}
    assert set(outputs) <= {"outputDir", "adapter", "mergedModel", "model", "lossPlot"}, outputs
    assert all(isinstance(v, str) and len(v) <= 1024 for v in outputs.values()), outputs
    if "evalReport" in str(outcome):  # the known output kept beside the unknown one
        assert outputs == {"adapter": "pvc://models/x/run/checkpoint-40"}
    assert not isinstance(d.wire.get("latestCheckpoint"), dict)
    assert decide(spec(), [], d.status, Observed(done), NOW).events == []  # and the next reconcile is quiet


def test_a_progress_report_of_another_launcher_version_keeps_only_what_fits():
    odd = {"step": "12", "total_steps": True, "percent": 150.0, "summary": "x" * 100, "loss": float("nan"),
           "eval_loss": 2.5, "epoch": -1, "tokens_per_second": 900, "eta": {"m": 1}, "new_metric": 0.5}  # fmt: skip
    assert progress_status(odd) == {"evalLoss": 2.5, "tokensPerSecond": 900}
    d = decide(spec(), [], {**RUNNING_STATUS, "phase": "Starting"}, Observed(JOB, (pod("Running"),), odd), NOW)
    FineTuneJobStatus.model_validate(d.wire)
    assert d.wire["phase"] == "Running"


def test_no_stall_warning_before_this_attempts_first_report():
    """A new attempt (a restart, a resume after a suspend or a Kueue preemption) whose launcher is still in its
    pre-flight has not answered yet: the previous attempt's last read, however old, is not silence."""
    job = spec(failure_policy__stall_timeout_seconds=600)
    old = {**RUNNING_STATUS, "attempt": 2, "phase": "Starting",
           "progress": {"step": 40, "readAt": timestamp(NOW - timedelta(days=1))}}  # fmt: skip
    silent = Observed(JOB, (pod("Running"),))
    first = decide(job, [], old, silent, NOW)
    later = decide(job, [], first.wire, silent, NOW + timedelta(hours=2))
    for d in (first, later):
        assert d.wire["phase"] == "Running" and "ProgressReported" not in conditions(d.status), d.wire
        assert [e for e in d.events if e[1] == "NoProgressReport"] == []
    assert "pods running, no progress reported yet" in conditions_message(later.status, "Running")  # not attempt 1's


def test_progress_passes_the_loss_history_through():
    """lossHistory (the sparkline in `modelforge status`): finite numbers only; anything else is no history."""
    history = [7.61, 5, 3.2, 2.03]
    d = decide(spec(), [], RUNNING_STATUS, Observed(JOB, (pod("Running"),), {"step": 4, "loss_history": history}), NOW)
    assert d.wire["progress"] == {"step": 4, "lossHistory": [7.61, 5.0, 3.2, 2.03], "readAt": timestamp(NOW)}
    assert progress_status({"loss_history": [7.6, float("nan"), 5.0, float("inf"), -float("inf")]}) == {
        "lossHistory": [7.6, 5.0]
    }
    for odd in ("7.6,5.0", {"a": 1.0}, [7.6, "5.0"], [True, 1.0], [float("nan")], [], None):
        assert progress_status({"step": 1, "loss_history": odd}) == {"step": 1}
    # More than 32 (a launcher of another version): averaged down over the whole run, not cut.
    sent = progress_status({"loss_history": [float(i) for i in range(64)]})["lossHistory"]
    assert len(sent) == 32 and (sent[0], sent[-1]) == (0.5, 62.5)


def test_running_progress_updates_the_latest_checkpoint():
    """status.latestCheckpoint follows the launcher's /progress while training, not only at an attempt's end."""
    progress = {"step": 12, "total_steps": 40, "latest_checkpoint": "pvc://models/tiny/run/checkpoint-10"}
    before = {**RUNNING_STATUS, "latestCheckpoint": "pvc://models/tiny/run/checkpoint-5"}
    d = decide(spec(), [], before, Observed(JOB, (pod("Running"),), progress), NOW)
    assert d.wire["latestCheckpoint"] == "pvc://models/tiny/run/checkpoint-10"
    assert "latestCheckpoint" not in d.wire["progress"]
    # No checkpoint yet (or /progress unreadable): the one known stays.
    d = decide(spec(), [], before, Observed(JOB, (pod("Running"),), {"step": 3, "latest_checkpoint": None}), NOW)
    assert d.wire["latestCheckpoint"] == "pvc://models/tiny/run/checkpoint-5"


def test_a_resumed_run_reporting_a_step_past_its_total_still_succeeds():
    """Resumed from a checkpoint saved on SIGTERM, a run logged step 25 of 24 (measured with Kueue's preemption,
    tests/cluster/test_kueue.py): the job Succeeds, percent capped at 100 (the status schema's bound)."""
    outcome = {"outcome": "Succeeded", "reason": "Completed", "message": "trained", "last_step": 25, "total_steps": 24}
    done = {**JOB, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    d = decide(spec(), [], RUNNING_STATUS, Observed(done, (terminated("Succeeded", outcome, "Completed", 0),)), NOW)
    assert d.wire["phase"] == "Succeeded" and d.wire["progress"]["percent"] == 100.0, d.wire


def test_success_records_outputs():
    outcome = {"outcome": "Succeeded", "reason": "Completed", "message": "trained 40 step(s)", "last_step": 40,
               "total_steps": 40, "last_checkpoint": "pvc://models/tiny/run/checkpoint-40",
               "outputs": {"adapter": "pvc://models/tiny/run/checkpoint-40"}}  # fmt: skip
    done = {**JOB, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    d = decide(spec(), [], RUNNING_STATUS, Observed(done, (terminated("Succeeded", outcome, "Completed", 0),)), NOW)
    assert d.wire["phase"] == "Succeeded" and d.wire["completionTime"] == timestamp(NOW)
    assert d.wire["outputs"] == {"adapter": "pvc://models/tiny/run/checkpoint-40"}
    assert d.wire["latestCheckpoint"].endswith("checkpoint-40")
    assert d.wire["progress"]["summary"] == "40/40 (100%)"
    assert conditions(d.status)["Succeeded"] == ("True", "Completed")
    assert decide(spec(), [], d.status, Observed(done), NOW).events == []  # terminal: nothing more happens


def test_retryable_failure_restarts_with_backoff_then_attempt_two():
    outcome = {"outcome": "Failed", "reason": "NCCL", "message": "NCCL timeout", "retryable": True,
               "last_checkpoint": "pvc://models/tiny/run/checkpoint-20"}  # fmt: skip
    failed = Observed(JOB, (terminated("Failed", outcome, code=75),))
    d = decide(spec(), [], RUNNING_STATUS, failed, NOW)
    assert d.delete_attempt == 1 and d.create_attempt is None
    assert (d.wire["phase"], d.wire["restarts"]) == ("Restarting", 1)
    assert d.wire["nextAttemptTime"] == timestamp(NOW + timedelta(seconds=30))
    assert "from pvc://models/tiny/run/checkpoint-20" in conditions_message(d.status, "Running")
    waiting = decide(spec(), [], d.status, Observed(), NOW + timedelta(seconds=10))
    assert waiting.create_attempt is None and waiting.wire["phase"] == "Restarting"
    later = decide(spec(), [], d.status, Observed(), NOW + timedelta(seconds=31))
    assert later.create_attempt == 2 and later.wire["attempt"] == 2 and later.wire["phase"] == "Starting"
    assert "nextAttemptTime" not in later.wire


def test_the_next_attempt_waits_for_a_stopping_pod_of_the_last_one():
    """An evicted (or `kubectl delete`d) trainer saves a checkpoint in its grace period: the next attempt starts
    once its pod is gone, so that it resumes from that checkpoint and never shares the run directory with it."""
    evicted = pod(
        "Running", conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]
    )
    d = decide(spec(failure_policy__backoff_seconds=0), [], RUNNING_STATUS, Observed(JOB, (evicted,)), NOW)
    assert d.delete_attempt == 1 and d.wire["phase"] == "Restarting"
    saving = {
        **evicted,
        "metadata": {**evicted["metadata"], "deletionTimestamp": timestamp(NOW + timedelta(seconds=20))},
    }
    waiting = decide(spec(), [], d.status, Observed(None, (saving,)), NOW + timedelta(seconds=5))
    assert waiting.create_attempt is None and waiting.wire["phase"] == "Restarting"
    said = conditions_message(waiting.status, "Running")
    assert "attempt 2 waits for attempt 1's pod(s) tiny-a1-0-x to stop" in said, said
    assert decide(spec(), [], d.status, Observed(None, ()), NOW + timedelta(seconds=25)).create_attempt == 2
    # A pod whose node stopped reporting stays "Running" forever: not waited for past its deadline.
    lost = decide(spec(), [], d.status, Observed(None, (saving,)), NOW + timedelta(seconds=51))
    assert lost.create_attempt == 2


def test_backoff_doubles():
    failed = Observed(JOB, (terminated("Failed", {"reason": "Rendezvous", "retryable": True, "message": "m"}),))
    d = decide(spec(), [], {**RUNNING_STATUS, "restarts": 2}, failed, NOW)
    assert d.wire["nextAttemptTime"] == timestamp(NOW + timedelta(seconds=120))


def test_restart_limit():
    nccl = terminated("Failed", {"reason": "NCCL", "retryable": True, "message": "m"})
    two = spec(resources__nodes=2)
    rank1 = pod("Running", index=1)
    d = decide(two, [], {**RUNNING_STATUS, "restarts": 3}, Observed(JOB, (nccl, rank1)), NOW)
    assert d.wire["phase"] == "Failed" and conditions(d.status)["Failed"][1] == "RestartLimitExceeded"
    assert d.delete_attempt == 1  # the Job has not failed yet and rank 1 runs: it may hold a GPU
    failed_job = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
    job_failed = {**JOB, "status": {"conditions": failed_job}}
    kept = decide(two, [], {**RUNNING_STATUS, "restarts": 3}, Observed(job_failed, (nccl, rank1)), NOW)
    assert kept.wire["phase"] == "Failed" and kept.delete_attempt is None  # its failed pods keep their logs
    # Before the Job controller's sync (a second after the pod changed): every pod has ended, nothing holds a
    # GPU, so the attempt is kept as well; one being deleted is not counted as ended.
    ended = decide(spec(), [], {**RUNNING_STATUS, "restarts": 3}, Observed(JOB, (nccl,)), NOW)
    assert ended.wire["phase"] == "Failed" and ended.delete_attempt is None
    deleting = {**nccl, "metadata": {**nccl["metadata"], "deletionTimestamp": timestamp(NOW)}}
    assert decide(spec(), [], {**RUNNING_STATUS, "restarts": 3}, Observed(JOB, (deleting,)), NOW).delete_attempt == 1


@pytest.mark.parametrize(
    ("evidence", "reason"),
    [
        (terminated("Failed", {"reason": "DataError", "retryable": False, "message": "a.jsonl:3: invalid JSON"}),
         "DataError"),
        (terminated("Failed", reason="OOMKilled", code=137), "OOMKilled"),
        (terminated("Failed", {"reason": "OutOfMemory", "retryable": False, "message": "CUDA out of memory"}),
         "OutOfMemory"),
    ],
)  # fmt: skip
def test_permanent_failures_fail_at_once(evidence, reason):
    d = decide(spec(), [], RUNNING_STATUS, Observed(JOB, (evidence,)), NOW)
    assert d.wire["phase"] == "Failed" and conditions(d.status)["Failed"][1] == reason
    assert d.wire.get("restarts") is None


def test_permanent_cause_on_one_rank_beats_a_retryable_one_on_another():
    oom = terminated("Failed", reason="OOMKilled", code=137)
    evicted = pod("Failed", 1, reason="Evicted", message="node memory pressure")
    d = decide(spec(), [], RUNNING_STATUS, Observed(JOB, (evicted, oom)), NOW)
    assert conditions(d.status)["Failed"][1] == "OOMKilled"


@pytest.mark.parametrize(
    ("condition_reason", "reason"),
    [("PreemptionByScheduler", "Preempted"), ("DeletionByTaintManager", "NodeLost"),
     ("EvictionByEvictionAPI", "Evicted")],
)  # fmt: skip
def test_disruptions_are_retryable(condition_reason, reason):
    disrupted = pod("Failed", conditions=[{"type": "DisruptionTarget", "status": "True", "reason": condition_reason}])
    cause = pod_failure_cause(disrupted)
    assert cause is not None and cause.reason == reason and cause.retryable


# The Job controller's own words (pkg/controller/job/pod_failure_policy.go) for the rules render/training.py sets.
DELETED = (
    "PodFailurePolicy",
    "Container trainer for pod ml/tiny-a1-0-x failed with exit code 75 matching FailJob rule at index 1",
)
DRAINED = ("PodFailurePolicy", "Pod ml/tiny-a1-0-x has condition DisruptionTarget matching FailJob rule at index 0")


@pytest.mark.parametrize(("failed", "reason", "says"), [
    (DELETED, "Interrupted", "pod ml/tiny-a1-0-x exited with the launcher's retryable code 75"),
    (DRAINED, "Evicted", "pod ml/tiny-a1-0-x was disrupted"),
    (("BackoffLimitExceeded", "Job has reached the specified backoff limit"), "Unknown", "backoff limit"),
])  # fmt: skip
def test_a_job_whose_pods_are_gone_is_explained_by_its_failure_policy(failed, reason, says):
    """A deleted or evicted pod vanishes with its termination message: the Job's Failed condition remains."""
    job = {**JOB, "status": {"conditions": [{"type": "Failed", "status": "True", "reason": failed[0],
                                             "message": failed[1]}]}}  # fmt: skip
    reported = {**RUNNING_STATUS, "latestCheckpoint": "pvc://m/run/checkpoint-50"}
    d = decide(spec(), [], reported, Observed(job, ()), NOW)
    assert d.create_attempt is None and d.delete_attempt == 1 and d.wire["restarts"] == 1
    running = conditions_message(d.status, "Running")
    assert f"attempt 1 failed ({reason}: " in running and says in running, running
    # The pod may have saved a newer checkpoint in its grace period: the message does not claim which.
    assert "from the newest checkpoint (the last reported: pvc://m/run/checkpoint-50)" in running, running


def test_the_jobs_failure_target_is_read_before_it_is_failed():
    """Since Kubernetes 1.31 the Job controller sets FailureTarget first; Failed waits for every pod to stop."""
    job = {**JOB, "status": {"conditions": [{"type": "FailureTarget", "status": "True", "reason": DELETED[0],
                                             "message": DELETED[1]}]}}  # fmt: skip
    d = decide(spec(), [], RUNNING_STATUS, Observed(job, ()), NOW)
    assert d.wire["phase"] == "Restarting" and "(Interrupted: " in conditions_message(d.status, "Running")


def test_suspend_deletes_the_attempt_and_resume_starts_the_next():
    s = spec(suspend=True)
    d = decide(s, [], RUNNING_STATUS, Observed(JOB, (pod("Running"),)), NOW)
    assert d.delete_attempt == 1 and d.wire["phase"] == "Suspended"
    assert conditions(d.status)["Suspended"] == ("True", "Suspended")
    resumed = decide(spec(), [], d.status, Observed(), NOW)
    assert resumed.create_attempt == 2 and resumed.wire["phase"] == "Starting"
    assert conditions(resumed.status)["Suspended"][0] == "False"
    assert resumed.wire.get("restarts") is None  # a suspend is not a failure


def test_active_deadline():
    s = spec(active_deadline_seconds=60)
    d = decide(s, [], RUNNING_STATUS, Observed(JOB, (pod("Running"),)), NOW)
    assert d.wire["phase"] == "Failed" and conditions(d.status)["Failed"][1] == "DeadlineExceeded"
    assert d.delete_attempt == 1


def test_lost_job_is_recreated_under_the_same_name():
    d = decide(spec(), [], RUNNING_STATUS, Observed(), NOW)
    assert d.create_attempt == 1 and d.wire["attempt"] == 1


def test_decisions_are_idempotent():
    observed = Observed(JOB, (pod("Running"),), {"step": 1, "total_steps": 2})
    first = decide(spec(), [], RUNNING_STATUS, observed, NOW)
    second = decide(spec(), [], first.status, observed, NOW)
    assert second.status == first.status and second.events == []
    assert JobPhase(first.wire["phase"]) == JobPhase.RUNNING


def test_pod_changes_names_only_fields_the_pods_see():
    from modelforge.plan.lifecycle import pod_changes

    s = spec()
    old = s.to_wire()
    assert pod_changes(s, old) == []
    edited = s.model_copy(update={"failure_policy": s.failure_policy.model_copy(update={"max_restarts": 9})})
    assert pod_changes(edited, old) == []
    bigger = s.model_copy(update={"resources": s.resources.model_copy(update={"gpus_per_node": 4})})
    assert pod_changes(bigger, old) == ["spec.resources"]


@pytest.mark.parametrize("reason", ["Stalled", "RankFailed"])
def test_a_stalled_or_lost_rank_restarts_the_gang_and_says_why(reason):
    """What the launcher's watchdog and a dead rank leave in the termination message (launcher/rank.py,
    outcome.py): the attempt is restarted, the condition names the reason and the launcher's words."""
    message = "rank 1 finished no training step for 1801 s (its last: step 40, training)"
    outcome = {"outcome": "Failed", "reason": reason, "message": message, "retryable": True}
    d = decide(spec(), [], RUNNING_STATUS, Observed(JOB, (terminated("Failed", outcome, code=75),)), NOW)
    assert d.delete_attempt == 1 and d.wire["phase"] == "Restarting"
    running = next(c for c in d.wire["conditions"] if c["type"] == "Running")
    assert running["reason"] == "Restarting" and reason in running["message"] and message in running["message"]


def test_a_replanned_deepspeed_preset_is_not_called_an_edit_of_spec_distributed():
    from modelforge.api.finetunejob import DeepSpeed
    from modelforge.plan.lifecycle import _replanned

    user = spec(distributed__deepspeed=DeepSpeed.AUTO)
    planned = spec(distributed__deepspeed=DeepSpeed.ZERO2)
    attempt = spec(distributed__deepspeed=DeepSpeed.NONE).to_wire()
    named = _replanned(["spec.distributed", "spec.resources"], user, planned, attempt)
    assert named == ["the DeepSpeed preset planned for deepspeed: auto (none -> zero2)", "spec.resources"]
    edited = {**attempt, "distributed": {**attempt["distributed"], "masterPort": 29999}}
    assert _replanned(["spec.distributed"], user, planned, edited) == ["spec.distributed"]
