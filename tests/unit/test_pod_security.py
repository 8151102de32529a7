"""Every pod ModelForge renders meets the Pod Security Standard `restricted` (the rules as
https://kubernetes.io/docs/concepts/security/pod-security-standards/ lists them for v1.33), and
spec.resources.security adds what a site needs where the docs say it does. The same pods are admitted by
a namespace that enforces `restricted` on the real control plane: tests/cluster/test_pod_security.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelforge.api.validate import SpecError, parse_resource
from modelforge.render.manifests import render_resource
from modelforge.render.security import HOME_DIR, image_allowed
from modelforge.render.settings import RenderSettings
from modelforge.specfile import load_documents

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted((ROOT / "tests" / "specs" / "valid").glob("*.yaml")) + sorted((ROOT / "examples").glob("*/*.yaml"))
VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                "secret"}  # fmt: skip
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What in a pod spec the `restricted` profile (baseline's rules included) refuses; [] when admitted."""
    problems = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{key}: true")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: {sorted(kinds - VOLUME_TYPES)}")
    pod_ctx = pod.get("securityContext") or {}
    for sysctl in pod_ctx.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']}")
    if pod_ctx.get("runAsUser") == 0:
        problems.append("pod runAsUser 0")
    containers = [*pod.get("initContainers", []), *pod["containers"], *pod.get("ephemeralContainers", [])]
    for container in containers:
        name, ctx = container["name"], container.get("securityContext") or {}
        if ctx.get("privileged"):
            problems.append(f"{name}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = ctx.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds {sorted(set(capabilities['add']) - {'NET_BIND_SERVICE'})}")
        if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not true")
        if ctx.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile {seccomp}")
        if ctx.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount {ctx['procMount']}")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
    return problems


def pod_specs(children: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod template among rendered children."""
    pods = []
    for child in children:
        name = f"{child['kind']} {child['metadata']['name']}"
        if child["kind"] in ("Job", "Deployment"):
            pods.append((name, child["spec"]["template"]["spec"]))
        elif child["kind"] == "RayJob":
            cluster = child["spec"]["rayClusterSpec"]
            pods.append((f"{name} head", cluster["headGroupSpec"]["template"]["spec"]))
            pods += [(f"{name} {g['groupName']}", g["template"]["spec"]) for g in cluster["workerGroupSpecs"]]
            pods.append((f"{name} submitter", child["spec"]["submitterPodTemplate"]["spec"]))  # KubeRay's Job
    return pods


# A serve with every helper container: the agent (live adapters, API key) and the chat-template step.
ALL_HELPERS = {
    "apiVersion": "modelforge.io/v1alpha1", "kind": "ModelServe", "metadata": {"name": "helpers"},
    "spec": {"model": {"source": "pvc://models/base"}, "engine": "vllm", "systemPrompt": "Be brief.",
             "adapters": [{"name": "sql", "source": "pvc://models/adapters/sql"}],
             "apiKeySecretRef": {"name": "key", "key": "key"}},
}  # fmt: skip


# Refused before any pod, on purpose: they do not fit the default GPUs (their READMEs say how to fix it),
# and the serves whose adapter comes from such a job. Any other refusal is a render regression.
REFUSED = {
    ("modelserve-multi-lora.yaml", "assistants"), ("qwen3-30b-a3b-full-5gpu.yaml", "a3b-thinking-full"),
    ("qwen3-8b-qlora-8gb.yaml", "support-assistant"), ("modelserve.yaml", "assistants"),
    ("finetunejob.yaml", "support-assistant"),
}  # fmt: skip


def rendered_pods(settings: RenderSettings) -> list[tuple[str, dict[str, Any]]]:
    """The pods of every valid spec file and example, a serve rendered with the jobs of all the files."""
    docs = [(path.name, doc.data) for path in SPEC_FILES for doc in load_documents(path)] + [("-", ALL_HELPERS)]
    ours = [(name, d) for name, d in docs if d["apiVersion"].startswith("modelforge.io/")]
    jobs = {d["metadata"]["name"]: parse_resource(d).spec for _, d in ours if d["kind"] == "FineTuneJob"}
    pods, refused = [], set()
    for name, doc in ours:
        try:
            pods += pod_specs(render_resource(doc, settings, jobs=jobs))
        except ValueError:
            refused.add((name, doc["metadata"]["name"]))
    assert refused == REFUSED, refused
    return pods


PODS = rendered_pods(RenderSettings())


def test_the_corpus_covers_every_kind_of_pod():
    containers = {c["name"] for _, pod in PODS for c in [*pod["containers"], *pod.get("initContainers", [])]}
    expected = {"trainer", "ray-head", "ray-worker", "ray-job-submitter", "engine", "agent", "chat-template"}
    assert expected <= containers, containers
    assert len(PODS) >= 10


@pytest.mark.parametrize(("where", "pod"), PODS, ids=[where for where, _ in PODS])
def test_every_rendered_pod_meets_restricted(where, pod):
    assert restricted_violations(pod) == [], where
    assert pod["automountServiceAccountToken"] is False  # no pod of ours talks to the API server
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["fsGroup"] == 10001


def _job(**security: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "t"},
        "spec": {"model": {"source": "pvc://models/tiny"}, "datasets": [{"source": "pvc://data/train.jsonl"}],
                 "hyperparameters": {"maxSteps": 4},
                 "output": {"claimName": "models"},
                 "resources": {"gpusPerNode": 1, "security": security}},
    }  # fmt: skip


def test_a_site_adds_a_uid_and_capabilities_to_the_main_container_only():
    ipc = pod_specs(render_resource(_job(runAsUser=2000, fsGroup=3000, addCapabilities=["IPC_LOCK"]), RenderSettings()))
    (_, pod), = ipc  # fmt: skip
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 2000, "runAsGroup": 2000, "fsGroup": 3000,
        "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    # The cost the field's description names: IPC_LOCK takes the pod out of `restricted`.
    assert restricted_violations(pod) == ["trainer: adds ['IPC_LOCK']"]
    (_, bind), = pod_specs(render_resource(_job(addCapabilities=["NET_BIND_SERVICE"]), RenderSettings()))  # fmt: skip
    assert restricted_violations(bind) == []


def test_the_operator_default_uid_comes_from_its_settings():
    settings = RenderSettings.from_env({"MODELFORGE_RUN_AS_USER": "4242"})
    (_, pod), = pod_specs(render_resource(_job(), settings))  # fmt: skip
    assert pod["securityContext"]["runAsUser"] == 4242


@pytest.mark.parametrize(
    ("security", "path"),
    [({"runAsUser": 0}, "spec.resources.security.runAsUser"),
     ({"addCapabilities": ["ipc_lock"]}, "spec.resources.security.addCapabilities[0]"),
     ({"privileged": True}, "spec.resources.security.privileged")],
)  # fmt: skip
def test_bad_security_fields_are_refused_at_their_path(security, path):
    with pytest.raises(SpecError) as info:
        parse_resource(_job(**security))
    assert [p.path for p in info.value.problems] == [path]


def test_vllm_runs_as_non_root_with_a_writable_home():
    engines = [pod for _, pod in PODS if any(c["name"] == "engine" and "vllm" in c["image"] for c in pod["containers"])]
    assert engines
    for pod in engines:
        engine = next(c for c in pod["containers"] if c["name"] == "engine")
        home = next(e["value"] for e in engine["env"] if e["name"] == "HOME")
        assert any(m["mountPath"] == home and m["name"] == "home" for m in engine["volumeMounts"])
        assert any(v["name"] == "home" and "emptyDir" in v for v in pod["volumes"])


@pytest.mark.parametrize(
    ("image", "allowed"),
    [("ghcr.io/acme/trainer:1.2", True), ("ghcr.io/acme/team/x@sha256:ab", True), ("vllm/vllm-openai:v0.32.0", True),
     ("vllm/vllm-openai", True), ("registry.local:5000/exact:7", True), ("registry.local:5000/exact:8", False),
     ("ghcr.io/acmeevil/trainer:1", False), ("docker.io/vllm/vllm-openai:v1", False), ("evil/vllm-openai", False)],
)  # fmt: skip
def test_the_image_allow_list(image, allowed):
    entries = ("ghcr.io/acme/", "vllm/vllm-openai", "registry.local:5000/exact:7")
    assert image_allowed(image, entries) is allowed


def test_an_image_off_the_allow_list_is_refused_before_any_pod_naming_the_field():
    settings = RenderSettings.from_env({"MODELFORGE_ALLOWED_IMAGES": "ghcr.io/acme/, vllm/vllm-openai"})
    job = _job()
    assert pod_specs(render_resource(job, settings))  # the operator's default image is always allowed
    job["spec"]["resources"]["image"] = "docker.io/someone/miner:latest"
    with pytest.raises(ValueError, match=r"spec.resources.image: docker.io/someone/miner:latest is not allowed on "
                                         r"this cluster \(allowed: ghcr.io/acme/, vllm/vllm-openai\)"):  # fmt: skip
        render_resource(job, settings)
    serve = {**ALL_HELPERS, "spec": {**ALL_HELPERS["spec"], "resources": {"image": "quay.io/x/vllm:1"}}}
    with pytest.raises(ValueError, match=r"spec\.resources\.image: quay\.io/x/vllm:1 is not allowed"):
        render_resource(serve, settings)
    serve["spec"]["resources"]["image"] = "vllm/vllm-openai:v0.33.0"
    assert pod_specs(render_resource(serve, settings))


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_a_models_own_code_is_off_unless_the_spec_trusts_it():
    (_, pod), = pod_specs(render_resource(_job(), RenderSettings()))  # fmt: skip
    assert _env(pod["containers"][0])["MODELFORGE_TRUST_REMOTE_CODE"] == "0"
    job = _job()
    job["spec"]["model"]["trustRemoteCode"] = True
    (_, pod), = pod_specs(render_resource(job, RenderSettings()))  # fmt: skip
    assert _env(pod["containers"][0])["MODELFORGE_TRUST_REMOTE_CODE"] == "1"
    for trust in (False, True):
        serve = {**ALL_HELPERS, "spec": {**ALL_HELPERS["spec"], "model": {"source": "pvc://models/base",
                                                                          "trustRemoteCode": trust}}}  # fmt: skip
        (_, pod), = pod_specs(render_resource(serve, RenderSettings()))  # fmt: skip
        engine = pod["containers"][0]
        assert ("--trust-remote-code" in engine["args"]) is trust
        assert _env(engine)["MODELFORGE_TRUST_REMOTE_CODE"] == ("1" if trust else "0")


def test_the_serve_a_job_creates_is_judged_before_training_and_inherits_its_trust():
    settings = RenderSettings.from_env({"MODELFORGE_ALLOWED_IMAGES": "ghcr.io/acme/"})
    job = _job()
    job["spec"]["serve"] = {"spec": {"resources": {"image": "quay.io/x/vllm:1"}}}
    with pytest.raises(ValueError, match=r"spec\.serve\.spec\.resources\.image: quay\.io/x/vllm:1 is not allowed"):
        render_resource(job, settings)
    job["spec"]["serve"]["spec"]["resources"]["image"] = RenderSettings().vllm_image  # the chart's own: allowed
    assert pod_specs(render_resource(job, settings))

    from modelforge.render.desired import modelserve_from_job

    assert modelserve_from_job("j", "ns", {}, trust_remote_code=True)["spec"]["model"] == {
        "fromFineTuneJob": "j", "trustRemoteCode": True,
    }  # fmt: skip
    assert modelserve_from_job("j", "ns", {})["spec"]["model"] == {"fromFineTuneJob": "j"}


@pytest.mark.parametrize(("where", "pod"), PODS, ids=[w for w, _ in PODS])
def test_every_container_has_a_read_only_root_and_a_writable_tmp_and_home(where, pod):
    """What a program may write is declared: /tmp and HOME are emptyDirs of the pod (the images tier runs each
    image so, tests/images)."""
    emptydirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, container["name"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts["/tmp"] in emptydirs and mounts[HOME_DIR] in emptydirs, container["name"]
        assert {"name": "HOME", "value": HOME_DIR} in container["env"], container["name"]
