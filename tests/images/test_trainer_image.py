"""The trainer-cpu image runs a training pod as rendered: `modelforge launch` with the attempt's ConfigMap,
env and volumes, as UID 10001 on a read-only root with every capability dropped. It trains the tiny model
(the real `swift sft`), writes checkpoints, the merged model, the loss plot and its outcome where the kubelet
reads it; a SIGTERM (what a kubelet sends on preemption or drain) saves a checkpoint at the step reached and
exits with the code the operator treats as retryable; the swift engine serves what it trained."""

from __future__ import annotations

import time

from modelforge.launcher.outcome import EXIT_RETRYABLE
from modelforge.render.manifests import render_resource

from .pod import PodRunner, http_json, wait_http
from .training import SETTINGS, STEPS, finetunejob, logged_steps, training_pod, volumes


def test_the_training_pod_trains_and_reports_its_outcome(trained):
    pod, cid, claims = trained
    outcome = pod.termination_message("trainer")  # the file the kubelet reads into the pod's status
    assert outcome["outcome"] == "Succeeded", outcome
    out = claims["output"] / "support"  # the Job mounts the claim's subPath <job name>
    assert logged_steps(out / "run")[-1] == STEPS
    assert (out / "run" / f"checkpoint-{STEPS}" / "adapter_model.safetensors").exists()
    assert (out / "merged" / "config.json").exists()
    assert (out / "plots" / "loss.png").stat().st_size > 1000
    assert f"{STEPS}/{STEPS}" in pod.logs(cid)


def test_what_the_pod_wrote_belongs_to_its_user_and_the_claims_group(trained):
    """UID 10001 wrote every file; the claim's group (fsGroup) is on each of them, so the next attempt, or a
    serving pod of another UID in that group, can read and extend them."""
    _, _, claims = trained
    out = claims["output"] / "support"
    written = [p for p in out.rglob("*") if not p.is_symlink()]
    assert len(written) > 20
    assert {p.stat().st_uid for p in written} == {10001}, sorted({(p.stat().st_uid, str(p)) for p in written})[:5]
    assert {p.stat().st_gid for p in written} == {10001}
    assert out.stat().st_uid == 0  # the subPath the kubelet made stays the provisioner's; the group lets us write


def test_the_container_runs_as_the_pods_user_with_nothing_else_writable(tmp_path):
    """`id` and a write outside the declared volumes, in a container of the rendered pod."""
    pod = training_pod(finetunejob("probe", 1, 1, merge=False), {"models": tmp_path / "m", "output": tmp_path / "o"},
                       tmp_path / "pod")  # fmt: skip
    try:
        cid = pod.start("trainer", command=["sh", "-c", "id; touch /opt/venv/x 2>&1; touch /tmp/x /home/modelforge/x "
                                                         "/mnt/output/x && echo wrote"])  # fmt: skip
        assert pod.wait(cid, 60) == 0
        said = pod.logs(cid)
        assert "uid=10001(modelforge) gid=10001(modelforge) groups=10001(modelforge)" in said, said
        assert "Read-only file system" in said and "wrote" in said, said
    finally:
        pod.remove()


def test_sigterm_saves_a_checkpoint_at_the_step_reached_and_exits_retryable(tmp_path):
    """`docker kill --signal TERM` hits PID 1, the launcher, as the kubelet's SIGTERM does."""
    claims = volumes(tmp_path)
    pod = training_pod(finetunejob("preempted", 5000, 5000, merge=False), claims, tmp_path / "pod")
    run_dir = claims["output"] / "preempted" / "run"
    try:
        cid = pod.start("trainer")
        deadline = time.monotonic() + 300
        while not [s for s in logged_steps(run_dir) if s >= 10]:
            assert time.monotonic() < deadline, pod.logs(cid)[-3000:]
            assert pod.wait_running(cid), pod.logs(cid)[-3000:]
            time.sleep(0.5)
        at_signal = logged_steps(run_dir)[-1]
        pod.signal(cid, "TERM")
        code = pod.wait(cid, 120)
        said = pod.logs(cid)
        assert code == EXIT_RETRYABLE, said[-3000:]
        outcome = pod.termination_message("trainer")
        assert outcome["reason"] == "Interrupted" and outcome["retryable"] is True, outcome
        saved = sorted(int(p.name.rsplit("-", 1)[1]) for p in run_dir.glob("checkpoint-*"))
        assert saved and saved[-1] >= at_signal, (saved, at_signal)
        assert f"after saving checkpoint-{saved[-1]}" in outcome["message"], outcome
    finally:
        pod.remove()


def test_the_swift_engine_serves_the_fine_tune(trained, tmp_path):
    """The ModelServe of the merged model, engine swift, in the trainer-cpu image: /v1/models and a chat."""
    _, _, claims = trained
    doc = {"apiVersion": "modelforge.io/v1alpha1", "kind": "ModelServe",
           "metadata": {"name": "support", "namespace": "images"},
           "spec": {"model": {"source": "pvc://output/support/merged"}, "engine": "swift", "maxModelLen": 512,
                    "resources": {"gpusPerReplica": 0}}}  # fmt: skip
    deployment = next(c for c in render_resource(doc, SETTINGS) if c["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    pod = PodRunner(
        template["spec"],
        tmp_path / "pod",
        claims={"output": claims["output"]},
        metadata={"name": "support-abc", "namespace": "images", "labels": template["metadata"]["labels"]},
    )
    try:
        cid = pod.start("engine")
        base = f"http://{pod.ip}:8000"
        wait_http(pod, cid, f"{base}/health", 240)
        models = [m["id"] for m in http_json(f"{base}/v1/models")["data"]]
        assert models == ["support"], models
        question = {"role": "user", "content": "How do I reset my password?"}
        answer = http_json(f"{base}/v1/chat/completions", {"model": "support", "max_tokens": 8, "messages": [question]})
        assert answer["choices"][0]["message"]["content"].strip(), answer
    finally:
        pod.remove()
