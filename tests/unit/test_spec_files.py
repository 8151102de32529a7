"""Spec files under tests/specs: valid ones pass, each invalid one fails at exactly the field it names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelforge.api.validate import SpecError, parse_resource, validate_document
from modelforge.cli import main
from modelforge.specfile import SpecFileError, load_documents

SPECS = Path(__file__).resolve().parents[1] / "specs"
VALID = sorted((SPECS / "valid").glob("*.yaml"))
INVALID = sorted((SPECS / "invalid").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (?P<path>\S+): (?P<message>.+)$", re.M)


def test_there_are_enough_examples():
    assert len(VALID) >= 6 and len(INVALID) >= 6
    names = {p.name for p in VALID}
    assert {"qwen3-8b-qlora-8gb.yaml", "qwen3-30b-a3b-full-5gpu.yaml"} <= names


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_spec_files_pass(path, capsys):
    assert main(["validate", str(path)]) == 0
    for doc in load_documents(path):
        assert parse_resource(doc.data).name == doc.data["metadata"]["name"]
    assert "is valid" in capsys.readouterr().out


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_spec_files_name_the_field(path, capsys):
    expect = EXPECT.search(path.read_text())
    assert expect, f"{path.name} needs a '# expect: <field.path>: <message>' header"
    (doc,) = load_documents(path)
    problems = validate_document(doc.data)
    assert [p.path for p in problems] == [expect["path"]]
    assert expect["message"] in problems[0].message
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:{doc.line_of(expect['path'])}: {expect['path']}: " in err
    with pytest.raises(SpecError) as info:
        parse_resource(doc.data)
    assert info.value.problems == problems


def test_validate_reports_every_problem_across_documents(tmp_path, capsys):
    spec = tmp_path / "two.yaml"
    good = (SPECS / "valid" / "tiny-cpu.yaml").read_text()
    bad = (SPECS / "invalid" / "serve-swift-tp.yaml").read_text()
    text = good + "\n---\n" + bad
    spec.write_text(text)
    engine_line = text.splitlines().index("  engine: swift", len(good.splitlines())) + 1
    assert main(["validate", str(spec)]) == 1
    out = capsys.readouterr()
    assert f"{spec}:2: FineTuneJob tiny is valid" in out.out
    assert f"{spec}:{engine_line}: spec.engine: tensorParallel and pipelineParallel above 1 need engine vllm" in out.err
    assert "1 problem(s) found" in out.err


def test_validate_skips_ordinary_kubernetes_objects(tmp_path, capsys):
    spec = tmp_path / "with-pvc.yaml"
    spec.write_text(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: models}\n---\n"
        + (SPECS / "valid" / "modelserve-a3b-tp4.yaml").read_text()
    )
    assert main(["validate", str(spec)]) == 0


def test_a_file_of_other_objects_is_fine_beside_ours_and_a_problem_alone(tmp_path, capsys):
    """Like `kubectl apply -f job.yaml pvc.yaml`: an example directory's pvc.yaml is no error beside its
    job; the same file on its own (or with only other foreign files) has nothing to do and says so."""
    pvc = tmp_path / "pvc.yaml"
    pvc.write_text("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: models}\n")
    secret = tmp_path / "secret.yaml"
    secret.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: key}\n")
    job = SPECS / "valid" / "modelserve-a3b-tp4.yaml"
    assert main(["validate", str(pvc), str(job), str(secret)]) == 0
    err = capsys.readouterr().err
    assert f"note: {pvc}:1: skipped a PersistentVolumeClaim 'models' (v1)" in err and "problem" not in err, err
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert main(["validate", str(job), str(empty)]) == 0  # a truncated file or a wrong path is said, though
    assert f"note: {empty}: no YAML documents in the file" in capsys.readouterr().err
    assert main(["validate", str(pvc), str(secret)]) == 1
    err = capsys.readouterr().err
    assert f"{pvc}: no FineTuneJob or ModelServe in the file" in err and "2 problem(s) found" in err, err


# Unreadable files, empty ones and every other class of bad input: tests/unit/test_bad_input.py.


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(SpecFileError, match="cannot read"):
        load_documents(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ([1, 2], ""),
        ({"apiVersion": "v1", "kind": "FineTuneJob", "metadata": {"name": "x"}, "spec": {}}, "apiVersion"),
        (
            {
                "apiVersion": "modelforge.io/v1alpha1",
                "kind": "TrainJob",
                "metadata": {"name": "x"},
                "spec": {},
            },
            "kind",
        ),
        (
            {
                "apiVersion": "modelforge.io/v1alpha1",
                "kind": "ModelServe",
                "metadata": {"name": "Bad_Name"},
                "spec": {"model": {"source": "a"}},
            },
            "metadata.name",
        ),
        ({"apiVersion": "modelforge.io/v1alpha1", "kind": "ModelServe", "metadata": {"name": "x"}}, "spec"),
    ],
)
def test_header_problems(doc, path):
    assert [p.path for p in validate_document(doc)] == [path]
