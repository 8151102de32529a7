"""The generated CRDs: up to date, valid Kubernetes objects, structural, and shaped as users expect."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from modelforge.api.crd import FINETUNEJOB, MODELSERVE, RESOURCES, build_crd
from modelforge.generate import drifted, generated_files
from tests.structural import structural_problems

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33"


def test_checked_in_generated_files_match_the_models():
    stale = drifted(ROOT)
    assert stale == [], f"regenerate with `make generate`: {stale}"


def test_drift_is_detected(tmp_path):
    for path, text in generated_files(ROOT).items():
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    assert drifted(tmp_path) == []
    crd_file = tmp_path / "crds" / "finetunejobs.modelforge.io.yaml"
    crd_file.write_text(crd_file.read_text().replace("shortNames", "shortnames"))
    assert drifted(tmp_path) == [crd_file]


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)
def test_crd_file_is_a_valid_customresourcedefinition(resource):
    data = yaml.safe_load((ROOT / "crds" / f"{resource.crd_name}.yaml").read_text())
    assert kubernetes_validate.validate(data, K8S_VERSION, strict=True) == K8S_VERSION


def test_kubernetes_validate_rejects_a_broken_crd():
    crd = build_crd(FINETUNEJOB)
    crd["spec"]["scope"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(crd, K8S_VERSION, strict=True)


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)
def test_schema_is_structural_bounded_and_described(resource):
    schema = build_crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert structural_problems(schema) == []


def test_structural_checker_finds_each_kind_of_problem():
    schema = copy.deepcopy(build_crd(MODELSERVE)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    spec = schema["properties"]["spec"]["properties"]
    del spec["replicas"]["type"]
    spec["servedModelName"].pop("maxLength")
    spec["service"]["additionalProperties"] = {"type": "string"}
    spec["engine"]["default"] = "tgi"
    spec["adapters"]["items"]["properties"]["name"]["$ref"] = "#/x"
    spec["dtype"].pop("description")
    problems = "\n".join(structural_problems(schema))
    for expected in (
        ".spec.replicas: no type",
        ".spec.servedModelName: unbounded string",
        ".spec.service: properties and additionalProperties both set",
        ".spec.engine: default 'tgi' is invalid",
        ".spec.adapters[].name: $ref",
        ".spec.dtype: no description",
    ):
        assert expected in problems


@pytest.mark.parametrize(
    ("resource", "short", "columns"),
    [
        (FINETUNEJOB, "ftj", ["Phase", "Kueue", "Method", "GPUs", "Progress", "Loss", "Eval", "Age"]),
        (MODELSERVE, "mserve", ["Phase", "Model", "TP", "Ready", "Endpoint", "Age"]),
    ],
    ids=["FineTuneJob", "ModelServe"],
)
def test_names_scope_subresource_and_columns(resource, short, columns):
    crd = build_crd(resource)
    spec = crd["spec"]
    version = spec["versions"][0]
    assert crd["metadata"]["name"] == f"{resource.plural}.modelforge.io"
    assert (spec["group"], spec["scope"], version["name"]) == ("modelforge.io", "Namespaced", "v1alpha1")
    assert spec["names"]["shortNames"] == [short]
    assert spec["names"]["categories"] == ["modelforge"]
    assert version["subresources"] == {"status": {}}
    shown = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert shown == columns


def test_printer_columns_point_at_fields_that_exist():
    for resource in RESOURCES:
        crd = build_crd(resource)
        version = crd["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]
        for column in version["additionalPrinterColumns"]:
            node = schema
            path = column["jsonPath"]
            if "[?(@.type==" in path:  # a condition's field: .status.conditions[?(@.type=="Admitted")].reason
                path = path.split("[?(", 1)[0] + "." + path.rsplit(")].", 1)[1]
                assert path.split(".")[-1] in ("reason", "message", "status"), column
            parts = path.strip(".").split(".")
            if parts[0] == "metadata":
                continue
            for part in parts:
                node = node["properties"][part]
                if node.get("type") == "array":
                    node = node["items"]
            expected = {"integer": "integer", "number": "number", "string": "string"}[column["type"]]
            assert node["type"] == expected, column


def test_nested_blocks_default_to_their_defaulted_fields():
    """Not `{}`: the API server checks defaults against CEL rules without nested defaulting (tests/cluster)."""
    spec = build_crd(FINETUNEJOB)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for block in ("resources", "distributed", "checkpointing", "failurePolicy"):
        default = spec["properties"][block]["default"]
        assert default and all(key in spec["properties"][block]["properties"] for key in default), default
    assert spec["properties"]["resources"]["default"]["gpusPerNode"] == 1
    assert spec["properties"]["resources"]["properties"]["gpusPerNode"]["default"] == 1
    assert "default" not in spec["properties"]["lora"]  # optional blocks stay absent unless given
