"""The story the kind e2e tells, on the local control plane: a tiny fine-tune -> Succeeded -> the ModelServe
from spec.serve -> an answer. The launcher (`modelforge launch`, the training pod's command) and the swift
engine run as real local processes for their pods, with the pod's ConfigMap, env and IP; the test then
reports the container's exit to the API as a kubelet would, with the launcher's termination message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from modelforge.testing import build_tiny_model, write_chat_dataset

from .kube import ContainerProcess, Kube, container_env, log_text, stop_process_group
from .operator import OperatorProcess
from .test_finetunejob import running_pods, status
from .test_modelserve import Engine, ready_pods, serve_status

PVC_ROOT = "/mnt/pvc"
STEPS = 20


def test_fine_tune_then_serve_then_answer(kube: Kube, operator: OperatorProcess, ns: str, tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"  # what the claims hold: volumes/<claim>/...
    build_tiny_model(volumes / "models" / "tiny")
    write_chat_dataset(volumes / "data" / "chat.jsonl")
    kube.claim(ns, "data")
    kube.claim(ns, "models")
    kube.create({"apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob",
                 "metadata": {"name": "support", "namespace": ns},
                 "spec": {"model": {"source": "pvc://models/tiny", "modelType": "qwen3", "template": "qwen3"},
                          "datasets": [{"source": "pvc://data/chat.jsonl"}],
                          "hyperparameters": {"maxSteps": STEPS, "learningRate": 5e-3, "batchSizePerDevice": 4,
                                              "maxLength": 256, "loggingSteps": 5, "dtype": "float32"},
                          "output": {"claimName": "models", "merge": True},
                          "serve": {"name": "support", "spec": {"engine": "swift", "resources": {"gpusPerReplica": 0},
                                                                "maxModelLen": 512}}}})  # fmt: skip
    pod = running_pods(kube, ns, "support", 1, 1)[0]
    log = tmp_path / "pod.log"
    kube.serve_container_log(ns, pod["metadata"]["name"], log)
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig)}
    followed_file, said_file = tmp_path / "followed.txt", tmp_path / "follower-stderr.txt"
    with followed_file.open("wb") as out, said_file.open("wb") as err:
        follower = subprocess.Popen([sys.executable, "-m", "modelforge.cli", "logs", "support", "-n", ns, "-f"],
                                    env=env, stdout=out, stderr=err, start_new_session=True)  # fmt: skip
    try:
        code, message = run_training_pod(kube, ns, pod, volumes, tmp_path, log)
        assert code == 0, message
        kube.finish_pod(ns, pod["metadata"]["name"], code, message=message)
        # `logs -f` printed the launcher's lines as they came, and ended by itself once the pod had.
        follower.wait(60)
    finally:
        stop_process_group(follower)  # type: ignore[arg-type]
    followed, said = followed_file.read_bytes().decode(errors="replace"), said_file.read_text()
    assert follower.returncode == 0, said
    assert followed == log_text(log) and f"{STEPS}/{STEPS}" in followed, (followed[-2000:], said)
    kube.wait_for(lambda: status(kube, ns, "support").get("phase") == "Succeeded", 60, "the fine-tune Succeeded")
    st = status(kube, ns, "support")
    assert st["progress"]["step"] == STEPS and st["outputs"]["mergedModel"] == "pvc://models/support/merged", st
    assert st["serveName"] == "support"

    serve_pod = ready_pods(kube, ns, "support", 1)[0]
    args = serve_pod["spec"]["containers"][0]["args"]
    assert f"{PVC_ROOT}/models/support/merged" in args, args
    engine = Engine(serve_pod, {f"{PVC_ROOT}/models": volumes / "models"}, tmp_path / "engine.log")
    try:
        engine.wait_healthy()
        kube.wait_for(lambda: serve_status(kube, ns, "support").get("phase") == "Ready", 60, "the serve Ready")
        chat = subprocess.run([sys.executable, "-m", "modelforge.cli", "chat", "--endpoint", engine.url + "/v1",
                               "--max-new-tokens", "12", "How do I reset my password?"],
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.strip(), "the served fine-tune gave an empty answer"
        assert "[support:" in chat.stderr, chat.stderr
    finally:
        engine.stop()


def start_training_pod(kube: Kube, ns: str, pod: dict[str, Any], volumes: Path, tmp: Path,
                       log: Path) -> tuple[ContainerProcess, Path]:  # fmt: skip
    """`modelforge launch` with the pod's ConfigMap and env, its claims mapped to `volumes`, serving /progress
    on the pod's IP, its output in the container `log`, as a container runtime starts it. Returns the running
    container and where its termination message will be."""
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["modelforge", "launch"], container["command"]
    config_map = next(v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v)
    config = tmp / "job.json"
    config.write_text(kube.get("ConfigMap", ns, config_map)["data"]["job.json"])
    output = next(m for m in container["volumeMounts"] if m["mountPath"] == "/mnt/output")
    claim = next(v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                 if v["name"] == output["name"])  # fmt: skip
    output_root = volumes / claim / output.get("subPath", "")
    output_root.mkdir(parents=True, exist_ok=True)
    termination = tmp / "termination-log"
    termination.unlink(missing_ok=True)
    env = {**os.environ, **container_env(pod),
           "MODELFORGE_PVC_ROOT": str(volumes), "MODELFORGE_OUTPUT_ROOT": str(output_root),
           "MODELFORGE_PROGRESS_HOST": pod["status"]["podIP"]}  # fmt: skip
    argv = [sys.executable, "-m", "modelforge.cli", "launch", "--config", str(config),
            "--termination-log", str(termination)]  # fmt: skip
    return ContainerProcess(argv, env, log), termination


def termination_message(code: int, termination: Path, log: Path) -> str:
    """What a kubelet reads as the container's termination message (FallbackToLogsOnError)."""
    message = termination.read_text() if termination.exists() else ""
    if code != 0:
        message += "\n" + log_text(log)[-3000:]
    return message.strip() or json.dumps({"outcome": "Failed", "message": "no termination message"})


def run_training_pod(kube: Kube, ns: str, pod: dict[str, Any], volumes: Path, tmp: Path, log: Path) -> tuple[int, str]:
    """A training pod run to its end (start_training_pod). Returns (exit code, termination message) as a
    kubelet would read them."""
    container, termination = start_training_pod(kube, ns, pod, volumes, tmp, log)
    try:
        code = container.proc.wait(600)
    finally:
        container.stop()
    return code, termination_message(code, termination, log)
