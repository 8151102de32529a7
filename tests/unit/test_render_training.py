"""Renderers for a training attempt: shape, env contract, and validity against the Kubernetes schemas."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from modelforge.api.conditions import EXIT_RETRYABLE
from modelforge.cli import main
from modelforge.launcher.run import SAVE_GRACE_ENV, _save_grace
from modelforge.render.names import MAX_ATTEMPT_NAME, attempt_name
from modelforge.render.settings import RenderSettings
from modelforge.render.training import Owner, render_attempt
from tests.launcher_specs import finetunejobs

JOBS = finetunejobs()
SETTINGS = RenderSettings()
K8S = "1.33"


def render(name: str, spec_name: str, attempt: int = 1, **spec_changes):
    spec = JOBS[spec_name].model_copy(deep=True)
    for key, value in spec_changes.items():
        setattr(spec.resources, key, value)
    owner = Owner("FineTuneJob", name, "team-a", "8a1f0c2e-0000-4000-8000-000000000001")
    return {obj["kind"]: obj for obj in render_attempt(owner, spec, attempt, SETTINGS)}


def env_of(job: dict) -> dict[str, object]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize(
    ("spec_name", "nodes", "gpus"),
    [("qwen3-8b-qlora-8gb", 1, 1), ("qwen3-30b-a3b-full-5gpu", 1, 5), ("multinode-lora-kueue", 4, 8)],
)
def test_every_object_is_valid_kubernetes(spec_name, nodes, gpus):
    objects = render("job", spec_name)
    for obj in objects.values():
        assert kubernetes_validate.validate(obj, K8S, strict=True) == K8S, obj["kind"]
    job = objects["Job"]
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (nodes, nodes)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["subdomain"] == objects["Service"]["metadata"]["name"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == str(gpus)
    env = env_of(job)
    assert (env["MODELFORGE_NNODES"], env["NPROC_PER_NODE"]) == (str(nodes), str(gpus))
    assert env["MASTER_ADDR"] == "job-a1-0.job-a1.team-a.svc" and env["MASTER_PORT"] == "29500"


def test_single_gpu_qlora_details():
    objects = render("support", "qwen3-8b-qlora-8gb")
    job, config = objects["Job"], objects["ConfigMap"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["modelforge", "launch"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/mnt/output"]["subPath"] == "support"  # default subPath = job name
    assert "/mnt/pvc/datasets" in mounts and mounts["/mnt/pvc/datasets"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "4Gi"}
    assert container["resources"]["requests"]["memory"] == "32Gi"
    payload = json.loads(config["data"]["job.json"])
    assert payload["spec"]["method"] == "qlora" and payload["outputUri"] == "pvc://models/support"
    assert payload["attempt"] == 1


def test_hub_token_comes_from_the_secret_and_nowhere_else():
    objects = render("a3b", "qwen3-30b-a3b-full-5gpu")
    env = env_of(objects["Job"])
    ref = {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    assert env["HF_TOKEN"] == ref and env["MODELSCOPE_API_TOKEN"] == ref
    assert env["HF_HOME"] == "/mnt/cache/huggingface"
    container = objects["Job"]["spec"]["template"]["spec"]["containers"][0]
    token_env = [e for e in container["env"] if e["name"] in ("HF_TOKEN", "MODELSCOPE_API_TOKEN")]
    assert all("value" not in e for e in token_env)  # only references: the value never leaves the Secret
    payload = json.loads(objects["ConfigMap"]["data"]["job.json"])
    assert payload["spec"]["secrets"] == {"hubToken": {"name": "hf-token", "key": "token"}}


def test_multinode_placement_and_kueue():
    objects = render("big-lora", "multinode-lora-kueue")
    job = objects["Job"]
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-team-a"
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu" and pod["priorityClassName"] == "training"
    service = objects["Service"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"modelforge.io/job": "big-lora", "modelforge.io/attempt": "1"}


def test_labels_and_owner_reference_on_every_child():
    for obj in render("job", "tiny-cpu", attempt=3).values():
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "modelforge-operator"
        assert (labels["modelforge.io/job"], labels["modelforge.io/attempt"]) == ("job", "3")
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["kind"] == "FineTuneJob" and owner["controller"] is True
        assert obj["metadata"]["name"] == "job-a3"


def test_no_queue_means_not_suspended_and_custom_gpu_resource():
    job = render("j", "tiny-cpu", gpu_resource_name="amd.com/gpu")["Job"]
    assert "suspend" not in job["spec"]
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"amd.com/gpu": "1"}


@pytest.mark.parametrize("length", [1, 40, 52, 63, 200, 253])
def test_attempt_names_fit_dns_labels_and_stay_unique(length):
    base = ("x" * (length - 1) + "y")[:length]
    names = {attempt_name(base, n) for n in (1, 2, 10, 100)}
    assert len(names) == 4
    for name in names:
        assert len(name) <= MAX_ATTEMPT_NAME and name[0].isalpha() and name[-1].isalnum()
    assert attempt_name(base + "z", 1) != attempt_name(base + "w", 1) or length < 50


def test_names_starting_with_a_digit_become_dns_1035():
    assert attempt_name("7b-run", 1) == "j7b-run-a1"


def test_render_cli(capsys):
    assert main(["render", "tests/specs/valid/tiny-cpu.yaml", "--attempt", "2"]) == 0
    out = capsys.readouterr().out
    assert "name: tiny-a2" in out and "kind: Job" in out and "kind: ConfigMap" in out


def test_render_cli_rejects_an_invalid_spec(capsys):
    assert main(["render", "tests/specs/invalid/zero-gpus.yaml"]) == 1
    assert "spec.resources.gpusPerNode" in capsys.readouterr().err


@pytest.mark.parametrize(("grace", "save"), [(None, "90"), ("600", "570"), ("30", "0")])
def test_the_sigterm_save_fits_the_pods_grace_period(grace, save):
    """The chart's trainer.terminationGracePeriodSeconds sets the pod's, and the launcher's checkpoint save on
    SIGTERM gets it less 30 s (to stop the rest and write the outcome before the kubelet's SIGKILL)."""
    settings = RenderSettings.from_env({"MODELFORGE_TERMINATION_GRACE_SECONDS": grace} if grace else {})
    owner = Owner("FineTuneJob", "job", "team-a", "8a1f0c2e-0000-4000-8000-000000000001")
    spec = JOBS["qwen3-8b-qlora-8gb"]
    job = {obj["kind"]: obj for obj in render_attempt(owner, spec, 1, settings)}["Job"]
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == int(grace or 120)
    assert env_of(job)["MODELFORGE_SAVE_GRACE_SECONDS"] == save
    assert _save_grace({SAVE_GRACE_ENV: save}) == float(save)  # what the launcher in the pod reads


def test_a_claim_both_read_and_written_is_one_writable_volume():
    """The kubelet mounts a claim once per pod: a second, read-only volume of the output's claim made the output
    read-only too (found on kind: EROFS on /mnt/output/run). The source stays read-only at its mount."""
    from modelforge.render.manifests import render_resource
    from modelforge.render.settings import RenderSettings

    doc = {"apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "tiny"},
           "spec": {"model": {"source": "pvc://models/tiny"}, "datasets": [{"source": "pvc://data/chat.jsonl"}],
                    "hyperparameters": {"maxSteps": 6},
                    "output": {"claimName": "models", "subPath": "jobs/tiny"}}}  # fmt: skip
    job = next(c for c in render_resource(doc, RenderSettings()) if c["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"claimName": "models"}, {"claimName": "data", "readOnly": True}]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/mnt/output"]["name"] == mounts["/mnt/pvc/models"]["name"] == "output"
    assert mounts["/mnt/pvc/models"]["readOnly"] is True and not mounts["/mnt/output"].get("readOnly")


def test_the_job_names_a_deleted_or_evicted_pods_exit_in_its_failed_condition():
    """backoffLimit 0 fails the Job at once; the rules only make the Job's Failed condition carry the evidence
    (plan/lifecycle.py job_failure_cause reads it once the pod is gone)."""
    job = render("job", "qwen3-8b-qlora-8gb")["Job"]
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert rules[0]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert rules[1]["onExitCodes"] == {"containerName": "trainer", "operator": "In", "values": [EXIT_RETRYABLE]}
    assert {r["action"] for r in rules} == {"FailJob"}
