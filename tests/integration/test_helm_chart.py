"""The Helm chart with the real helm binary: lint, template, schema-valid objects, least-privilege RBAC.

helm comes from scripts/get-helm.sh (make setup). These tests fail, not skip, when it is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from modelforge.controller.kube import KOPF_RULES, RAY_RBAC_RULES, RBAC_RULES
from modelforge.render.settings import RenderSettings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "modelforge"
HELM = str(ROOT / ".tools" / "bin" / "helm") if (ROOT / ".tools" / "bin" / "helm").exists() else shutil.which("helm")
K8S = "1.33"
VALUE_SETS = {
    "default": [],
    "namespaced": ["--set", "scope=namespaces", "--set", "watchNamespaces={team-a,team-b}"],
    "all-options": [
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "operator.logFormat=plain",
        "--set", "trainer.serviceAccountName=trainer", "--set", "imagePullSecrets={regcred}",
        "--set", "nodeSelector.pool=system", "--set", "commonLabels.team=ml",
        "--set", "image.tag=0.1.0-rc1", "--set", "ray.enabled=true",
    ],
}  # fmt: skip


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM, "helm is missing: run `make setup` (scripts/get-helm.sh installs it into .tools/bin)"
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120, check=False)


def template(values: list[str]) -> list[dict]:
    result = helm("template", "modelforge", str(CHART), "--namespace", "modelforge-system", *values)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def rules_of(objects: list[dict], kind: str) -> set[tuple[str, str, str]]:
    granted = set()
    for obj in objects:
        if obj["kind"] == kind:
            for rule in obj["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        granted |= {(group, resource, verb) for verb in rule["verbs"]}
    return granted


def expected_rules(ray: bool = False) -> set[tuple[str, str, str]]:
    rules = (*KOPF_RULES, *RBAC_RULES, *(RAY_RBAC_RULES if ray else ()))
    return {(g, r, v) for g, r, verbs in rules for v in verbs}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint(name):
    result = helm("lint", str(CHART), "--strict", *VALUE_SETS[name])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_templated_object_is_valid_kubernetes(name):
    objects = template(VALUE_SETS[name])
    assert {o["kind"] for o in objects} >= {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            assert obj["kind"] == "ServiceMonitor"  # not an upstream Kubernetes type: no official schema
            continue
        assert kubernetes_validate.validate(obj, K8S, strict=True) == K8S, obj["kind"]


def test_cluster_rbac_is_exactly_what_the_operator_calls():
    objects = template([])
    granted = rules_of(objects, "ClusterRole")
    assert granted == expected_rules()
    assert not any("*" in item for rule in granted for item in rule)


def test_rayjob_rights_only_with_ray_enabled():
    assert not any(group == "ray.io" for group, _, _ in rules_of(template([]), "ClusterRole"))
    granted = rules_of(template(["--set", "ray.enabled=true"]), "ClusterRole")
    assert granted == expected_rules(ray=True)


def test_namespaced_mode_grants_per_namespace_and_only_crd_reads_cluster_wide():
    objects = template(VALUE_SETS["namespaced"])
    roles = [o for o in objects if o["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    crd_reads = {("apiextensions.k8s.io", "customresourcedefinitions", verb) for verb in ("list", "watch")}
    assert rules_of(objects, "ClusterRole") == crd_reads
    per_namespace = rules_of([roles[0]], "Role") | rules_of(objects, "ClusterRole")
    assert per_namespace == expected_rules()
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELFORGE_NAMESPACES"] == "team-a,team-b"


def test_operator_pod_is_locked_down():
    deployment = next(o for o in template([]) if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    assert container["resources"]["requests"] and container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["command"] == ["modelforge", "operator"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "scope=everywhere"], "scope"),
        (["--set", "scope=namespaces"], "watchNamespaces is empty"),
        (["--set", "operator.logFormat=xml"], "logFormat"),
        (["--set", "trainer.terminationGracePeriodSeconds=10"], "terminationGracePeriodSeconds"),
    ],
)
def test_bad_values_are_refused_with_a_reason(values, message):
    result = helm("template", "modelforge", str(CHART), *values)
    assert result.returncode != 0 and message in result.stderr


def test_the_training_pods_grace_period_reaches_the_operator():
    deployment = next(o for o in template(["--set", "trainer.terminationGracePeriodSeconds=600"])
                      if o["kind"] == "Deployment")  # fmt: skip
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert RenderSettings.from_env(env).termination_grace_seconds == 600


def test_chart_crds_are_the_generated_ones():
    for path in (ROOT / "crds").glob("*.yaml"):
        assert (CHART / "crds" / path.name).read_text() == path.read_text()


def test_values_have_a_comment_each():
    """Every value is explained: its own comment, or the comment of the block it sits in (e.g. resources)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented: list[tuple[int, bool]] = []  # (indent, has comment) of the enclosing blocks
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        documented = [(i, d) for i, d in documented if i < indent]
        commented = lines[index - 1].strip().startswith("#")
        is_block = stripped.endswith(":")
        if not is_block:
            assert commented or any(d for _, d in documented), f"values.yaml:{index + 1}: no comment for {stripped}"
        documented.append((indent, commented))
    json.loads((CHART / "values.schema.json").read_text())


def test_the_install_notes_say_what_the_docs_say():
    """NOTES.txt (what `helm install` prints) and docs/install.md agree on the facts a user acts on."""
    done = helm("install", "modelforge", str(CHART), "--namespace", "modelforge-system", "--dry-run=client")
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    install = (ROOT / "docs" / "install.md").read_text()
    # Uninstall: nothing holds a finalizer (the operator uses no kopf timers, docs/operator.md).
    assert "puts no finalizer on FineTuneJobs or ModelServes" in notes
    assert "puts no finalizer on FineTuneJobs or ModelServes" in install
    assert "holds a finalizer" not in notes
    # The first fine-tune it suggests applies as written (tests/cluster/test_example_commands.py runs it).
    assert "kubectl apply -f examples/qwen3-8b-qlora/pvc.yaml -f examples/qwen3-8b-qlora/finetunejob.yaml" in notes
