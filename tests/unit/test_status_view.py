"""What `modelforge status/watch` print, from objects as the API server returns them."""

from __future__ import annotations

from modelforge.status_view import bar, describe, sparkline


def test_a_running_job():
    progress = {"step": 30, "totalSteps": 100, "loss": 1.25, "tokensPerSecond": 4000.0, "eta": "5m"}
    running = [{"type": "Running", "status": "True", "reason": "Training", "message": "ok"}]
    status = {"phase": "Running", "attempt": 2, "restarts": 1, "progress": progress, "conditions": running}
    job = {"kind": "FineTuneJob", "metadata": {"name": "sft", "namespace": "ml"}, "status": status}
    lines = describe(job)
    assert lines[0] == "FineTuneJob ml/sft: Running"
    assert "[#########---------------------] 30/100 (30%)  loss 1.25  4,000 tok/s  eta 5m" in lines[1]
    assert "attempt     2 (restarts 1)" in lines[2]
    assert lines[-1] == "  Running     True  Training: ok"


def test_a_job_kueue_preempted_then_resumed():
    progress = {"step": 12, "totalSteps": 24, "resumedFrom": "pvc://models/tuned/run/checkpoint-6"}
    admitted = [{"type": "Admitted", "status": "True", "reason": "Admitted", "message": "admitted by Kueue"}]
    status = {"phase": "Running", "attempt": 1, "preemptions": 1, "progress": progress, "conditions": admitted}
    text = "\n".join(describe({"kind": "FineTuneJob", "metadata": {"name": "tuned", "namespace": "ml"},
                               "status": status}))  # fmt: skip
    assert "attempt     1 (restarts 0, preempted 1x by Kueue)" in text, text
    assert "resumed     from pvc://models/tuned/run/checkpoint-6" in text, text


def test_a_serve_with_adapters():
    adapters = [{"name": "a", "state": "Failed", "message": "no path"}]
    serve = {"kind": "ModelServe", "metadata": {"name": "chat", "namespace": "ml"},
             "status": {"phase": "Degraded", "endpoint": "http://chat.ml.svc:8000/v1", "readyReplicas": 1,
                        "models": ["chat"], "adapters": adapters}}  # fmt: skip
    text = "\n".join(describe(serve))
    assert "endpoint    http://chat.ml.svc:8000/v1  (1 ready)" in text and "adapter     a Failed: no path" in text


def test_bar_without_a_total_is_empty():
    assert bar(None, 100) == "" and bar(5, None) == ""


def test_sparkline_shapes():
    assert sparkline([8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]) == "█▇▆▅▄▃▂▁"  # falling: one level a value
    assert sparkline([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) == "▁▂▃▄▅▆▇█"  # rising
    assert sparkline([2.5, 2.5, 2.5]) == "▁▁▁"  # flat: the bottom
    assert sparkline([3.0, 1.0]) == "█▁" and sparkline([]) == ""
    assert sparkline([7.61, 2.03, 2.04, 5.0]) == "█▁▁▅"  # scaled between min and max
    assert sparkline([8.0, 1.0, 4.0], " .:-=+*#") == "# -"  # the ASCII levels


def job_with(progress: dict) -> dict:
    return {"kind": "FineTuneJob", "metadata": {"name": "sft", "namespace": "ml"},
            "status": {"phase": "Running", "progress": progress}}  # fmt: skip


def test_describe_draws_the_loss_curve_from_two_points():
    falling = {"step": 8, "totalSteps": 10, "loss": 2.03, "lossHistory": [7.61, 6.5, 5.2, 3.3, 2.6, 2.5, 2.1, 2.03]}
    lines = describe(job_with(falling))
    assert lines[2] == "  loss        █▇▅▃▂▂▁▁  7.61 -> 2.03"
    assert describe(job_with(falling), ascii_only=True)[2] == "  loss        #*=-..__  7.61 -> 2.03"
    assert all(line.isascii() for line in describe(job_with(falling), ascii_only=True))
    assert describe(job_with({"lossHistory": [1.23456, 0.98765]}))[1] == "  loss        █▁  1.235 -> 0.9877"
    for fewer in ([2.0], [], None, "x"):
        assert not any(line.startswith("  loss ") for line in describe(job_with({"step": 1, "lossHistory": fewer})))


def test_a_job_and_the_serve_it_makes_name_each_other():
    job = {"kind": "FineTuneJob", "metadata": {"name": "support", "namespace": "ml"},
           "spec": {"serve": {"spec": {"engine": "vllm"}}}, "status": {"phase": "Running"}}  # fmt: skip
    assert "  serve       ModelServe support, created when the job succeeds (spec.serve)" in describe(job)
    job["status"] = {"phase": "Succeeded", "serveName": "support"}
    assert "  serve       ModelServe support (spec.serve)" in describe(job)
    serve = {"kind": "ModelServe", "metadata": {"name": "support", "namespace": "ml",
                                                "labels": {"modelforge.io/from-job": "support"}},
             "spec": {"model": {"fromFineTuneJob": "support"}}, "status": {"phase": "Loading"}}  # fmt: skip
    lines = describe(serve)
    assert "  made by     FineTuneJob support (its spec.serve)" in lines
    assert "  model       the output of FineTuneJob support" in lines
