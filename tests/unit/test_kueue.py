"""Kueue's words in our status (plan/kueue.py) and the lifecycle of a queued, admitted, preempted attempt
(plan/lifecycle.py). The Workloads here are shaped as Kueue v0.17 writes them (kueue.x-k8s.io/v1beta2); the
real Kueue plays them in tests/cluster/test_kueue.py."""

from __future__ import annotations

from datetime import timedelta

from modelforge.api.finetunejob import SchedulingSpec
from modelforge.plan.kueue import kueue_wait
from modelforge.plan.lifecycle import Observed, decide
from modelforge.render.training import kueue_labels

from .test_lifecycle import NOW, conditions, conditions_message, spec

QUOTA = ("couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor "
         "default-flavor, 8 more needed")  # fmt: skip
PREEMPTED = ("Preempted to accommodate a workload (UID: 1f2e, JobUID: 9a8b) due to prioritization in the "
             "ClusterQueue; preemptor path: /team-gpus; preemptee path: /team-gpus")  # fmt: skip


def workload(*conds: tuple[str, bool, str, str]) -> dict:
    return {"metadata": {"name": "job-tiny-a1-3f2a1"},
            "status": {"conditions": [{"type": t, "status": "True" if ok else "False", "reason": r, "message": m}
                                      for t, ok, r, m in conds]}}  # fmt: skip


def queued_spec():
    return spec("tiny-cpu", scheduling=SchedulingSpec(queue_name="team-a", priority_class="low"))


def test_the_job_carries_kueues_queue_and_priority_labels():
    assert kueue_labels(queued_spec()) == {"kueue.x-k8s.io/queue-name": "team-a",
                                           "kueue.x-k8s.io/priority-class": "low"}  # fmt: skip
    assert kueue_labels(spec("tiny-cpu")) == {}


def test_kueue_words_for_each_state():
    assert kueue_wait(None) is None
    assert kueue_wait(workload()) is None  # a new Workload Kueue has said nothing about yet
    pending = kueue_wait(workload(("QuotaReserved", False, "Pending", QUOTA)))
    assert pending is not None and (pending.reason, pending.message, pending.preempted) == ("Pending", QUOTA, False)
    evicted = workload(
        ("QuotaReserved", True, "QuotaReserved", "Quota reserved in ClusterQueue team-gpus"),
        ("Evicted", True, "Preempted", PREEMPTED),
        ("Preempted", True, "InClusterQueue", PREEMPTED),
    )
    said = kueue_wait(evicted)
    assert said is not None and said.preempted and (said.reason, said.message) == ("Preempted", PREEMPTED)
    # Requeued after its pods stopped: what it waits for now is added, in Kueue's words too.
    requeued = workload(("QuotaReserved", False, "Pending", QUOTA), ("Evicted", True, "Preempted", PREEMPTED))
    said = kueue_wait(requeued)
    assert said is not None and said.message.startswith(PREEMPTED) and said.message.endswith(f"Now: {QUOTA}")
    admitted = workload(("QuotaReserved", True, "QuotaReserved", "ok"), ("Admitted", True, "Admitted", "ok"))
    assert kueue_wait(admitted) is None
    checks = workload(
        ("QuotaReserved", True, "QuotaReserved", "Quota reserved in ClusterQueue team-gpus"),
        ("Admitted", False, "NoChecks", "Waiting for the admission checks"),
    )
    said = kueue_wait(checks)
    assert said is not None and said.reason == "NoChecks"
    odd = kueue_wait(workload(("QuotaReserved", False, "not a reason!", "x")))
    assert odd is not None and odd.reason == "Pending"  # never a reason the API server would refuse


def test_queued_says_kueues_reason_and_message():
    s = queued_spec()
    first = decide(s, [], {}, Observed(), NOW)
    job = {"metadata": {"name": "tiny-cpu-a1", "uid": "u1"}, "spec": {"suspend": True}, "status": {}}
    waiting = decide(s, [], first.status, Observed(job=job, workload=workload(("QuotaReserved", False, "Pending",
                                                                                  QUOTA))), NOW)  # fmt: skip
    assert waiting.wire["phase"] == "Queued" and conditions(waiting.status)["Admitted"] == ("False", "Pending")
    assert conditions_message(waiting.status, "Admitted") == QUOTA
    assert not waiting.wire.get("preemptions")
    # Before Kueue made its Workload: our own words.
    early = decide(s, [], first.status, Observed(job=job), NOW)
    assert conditions(early.status)["Admitted"] == ("False", "Queued") and "team-a" in conditions_message(
        early.status, "Admitted"
    )


def test_preempted_goes_back_to_the_queue_counted_as_a_preemption_not_a_restart():
    s = queued_spec()
    running = {"attempt": 1, "startTime": "2026-12-01T11:00:00Z", "phase": "Running",
               "conditions": [{"type": "Admitted", "status": "True", "reason": "Admitted", "message": "admitted"},
                              {"type": "Running", "status": "True", "reason": "Training", "message": "x"}]}  # fmt: skip
    job = {"metadata": {"name": "tiny-cpu-a1", "uid": "u1"}, "spec": {"suspend": True}, "status": {}}
    evicted = workload(("Evicted", True, "Preempted", PREEMPTED))
    d = decide(s, [], running, Observed(job=job, workload=evicted), NOW)
    assert d.wire["phase"] == "Queued" and conditions(d.status)["Admitted"] == ("False", "Preempted")
    assert conditions_message(d.status, "Admitted") == PREEMPTED and d.delete_attempt is None
    assert d.wire["preemptions"] == 1 and not d.wire.get("restarts") and d.wire["attempt"] == 1
    assert d.events and d.events[0][1] == "Preempted" and PREEMPTED in d.events[0][2]
    # Idempotent while it waits: counted once.
    again = decide(s, [], d.status, Observed(job=job, workload=evicted), NOW + timedelta(seconds=5))
    assert again.wire["preemptions"] == 1 and again.events == []
    # Readmitted: the same Job, unsuspended by Kueue, runs again.
    back = decide(s, [], again.status, Observed(job={**job, "spec": {"suspend": False}}), NOW + timedelta(seconds=9))
    assert conditions(back.status)["Admitted"] == ("True", "Admitted") and back.wire["attempt"] == 1


def test_a_job_failed_while_kueue_stopped_it_queues_its_next_attempt_without_a_restart():
    """The Job controller may fail the suspended Job on a trainer's exit 75 (its checkpoint saved) before the pod
    is gone: Kueue lets go of a finished Job, so attempt 2 queues again; preempted, not failed."""
    s = queued_spec()
    preempted = {"attempt": 1, "startTime": "2026-12-01T11:00:00Z", "phase": "Queued", "preemptions": 1,
                 "conditions": [{"type": "Admitted", "status": "False", "reason": "Preempted", "message": PREEMPTED,
                                 "lastTransitionTime": "2026-12-01T11:50:00Z"},
                                {"type": "Running", "status": "False", "reason": "Preempted", "message": "x",
                                 "lastTransitionTime": "2026-12-01T11:50:00Z"}]}  # fmt: skip
    failed = {
        "type": "Failed",
        "status": "True",
        "reason": "PodFailurePolicy",
        "message": "Container trainer for pod ns/tiny-cpu-a1-0 failed with exit code 75 matching FailJob rule",
    }
    job = {"metadata": {"name": "tiny-cpu-a1", "uid": "u1"}, "spec": {"suspend": True},
           "status": {"conditions": [failed]}}  # fmt: skip
    d = decide(s, [], preempted, Observed(job=job, workload=workload(("Evicted", True, "Preempted", PREEMPTED))), NOW)
    assert d.wire["phase"] == "Restarting" and d.delete_attempt == 1
    assert not d.wire.get("restarts") and d.wire["preemptions"] == 1
    assert "attempt 2 queues again" in conditions_message(d.status, "Running")
    # Once the Job and its pods are gone, attempt 2 starts: a suspended Job through the queue again.
    nxt = decide(s, [], d.status, Observed(), NOW + timedelta(seconds=1))
    assert nxt.create_attempt == 2 and nxt.wire["phase"] == "Queued" and not nxt.wire.get("restarts")
