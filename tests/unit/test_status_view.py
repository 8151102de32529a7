"""What `modelforge status/watch` print, from objects as the API server returns them."""

from __future__ import annotations

from modelforge.status_view import bar, describe


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


def test_a_serve_with_adapters():
    adapters = [{"name": "a", "state": "Failed", "message": "no path"}]
    serve = {"kind": "ModelServe", "metadata": {"name": "chat", "namespace": "ml"},
             "status": {"phase": "Degraded", "endpoint": "http://chat.ml.svc:8000/v1", "readyReplicas": 1,
                        "models": ["chat"], "adapters": adapters}}  # fmt: skip
    text = "\n".join(describe(serve))
    assert "endpoint    http://chat.ml.svc:8000/v1  (1 ready)" in text and "adapter     a Failed: no path" in text


def test_bar_without_a_total_is_empty():
    assert bar(None, 100) == "" and bar(5, None) == ""
