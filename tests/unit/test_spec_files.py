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
    line = doc.line_of(expect["path"])
    assert f"{path}:1: {expect['path']}: " in err and f"(line {line})" in err
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
    assert f"{spec}:1: FineTuneJob tiny is valid" in out.out
    assert (
        f"{spec}:3: spec.engine: tensorParallel and pipelineParallel above 1 need engine vllm (line {engine_line})"
    ) in out.err
    assert "1 problem(s) found" in out.err


def test_validate_skips_ordinary_kubernetes_objects(tmp_path, capsys):
    spec = tmp_path / "with-pvc.yaml"
    spec.write_text(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: models}\n---\n"
        + (SPECS / "valid" / "modelserve-a3b-tp4.yaml").read_text()
    )
    assert main(["validate", str(spec)]) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: x\nspec: {a: 1\nmetadata: [\n", r"broken\.yaml:3: not valid YAML"),
        ("", r"broken\.yaml: no YAML documents found"),
    ],
)
def test_unreadable_files_are_reported_with_location(tmp_path, capsys, text, message):
    spec = tmp_path / "broken.yaml"
    spec.write_text(text)
    assert main(["validate", str(spec)]) == 1
    assert re.search(message, capsys.readouterr().err)


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


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"apiVersion: modelforge.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: x\nspec: [\n", ":4: not valid YAML"),
        (b"\t- a\n", ":1: not valid YAML"),
        (b"kind: FineTuneJob\n\xff\xfe\n", ":2: not UTF-8 text"),
        (b"n: " + b"9" * 5000 + b"\n", "a value cannot be read"),
        (None, "cannot read: Is a directory"),
    ],
    ids=["unclosed", "tab", "not-utf8", "huge-int", "directory"],
)  # fmt: skip
@pytest.mark.parametrize("command", ["run", "validate", "plan", "render"])
def test_unreadable_files_get_a_message_not_a_traceback(tmp_path, capsys, command, content, expected):
    path = tmp_path / "spec.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    assert main([command, str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and expected in err, err
    assert "Traceback" not in err
