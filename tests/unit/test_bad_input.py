"""The bad-input corpus (tests/specs/bad, plus a few files made here): every command refuses every file with
a message naming `file[:line]` and the field, exit 1, no traceback, in bounded time and memory.

Each corpus file starts with `# expect: <text the message holds>`; `# line: N` pins the line the message
names; `# expect-finetunejob: <text>` is what the FineTuneJob-only commands (plan, run) say instead. The
bounds here (10 s, 300 MB of Python allocations per command) only catch a runaway — a file that expands
— and are far above what each input costs (bench/spec_corpus.py prints the figures).
"""

from __future__ import annotations

import json
import re
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelforge.api.validate import SpecError, parse_resource, validate_document
from modelforge.cli import main
from modelforge.specfile import MAX_FILE_BYTES, SpecFileError, load_documents

CORPUS = Path(__file__).resolve().parents[1] / "specs" / "bad"
HEADER = re.compile(rb"^# (expect|expect-finetunejob|line): (.+)$", re.M)
COMMANDS = ("validate", "plan", "render", "run")
RUNAWAY_SECONDS, RUNAWAY_BYTES = 10.0, 300 * 2**20


@dataclass(frozen=True)
class Case:
    path: Path
    expect: str
    expect_finetunejob: str
    line: int | None

    @classmethod
    def of(cls, path: Path) -> Case:
        head = dict((k.decode(), v.decode("latin-1")) for k, v in HEADER.findall(path.read_bytes()[:400]))
        assert "expect" in head, f"{path.name} needs a '# expect: <message>' first line"
        line = int(head["line"]) if "line" in head else None
        return cls(path, head["expect"], head.get("expect-finetunejob", head["expect"]), line)


def corpus_cases(tmp: Path) -> list[Case]:
    """The checked-in files and the ones a repository cannot hold (a directory, a missing path, a huge file)."""
    cases = [Case.of(p) for p in sorted(CORPUS.glob("*.yaml"))]
    (tmp / "a-directory.yaml").mkdir()
    huge = tmp / "huge.yaml"
    huge.write_text("apiVersion: modelforge.io/v1alpha1\n" + "# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    extra = [(tmp / "a-directory.yaml", "is a directory"), (tmp / "missing.yaml", "cannot read: No such file"),
             (huge, "larger than 1 MiB")]  # fmt: skip
    return cases + [Case(path, text, text, None) for path, text in extra]


def test_the_corpus_covers_every_class():
    names = [p.name for p in CORPUS.glob("*.yaml")]
    assert len(names) + 3 >= 60
    for prefix in ("syntax-", "tag-", "number-", "alias-", "nesting-", "duplicate-key-", "string-", "encoding-",
                   "apiversion-", "kind-", "empty", "comments-only", "quantity-negative", "namespace-",
                   "toplevel-unknown", "metadata-", "label-"):  # fmt: skip
        assert any(n.startswith(prefix) for n in names), prefix


def _run(command: str, case: Case, tmp: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float, int]:
    argv = [command, str(case.path)]
    if command == "run":
        argv += ["--dry-run", "--output", str(tmp / "out")]
    tracemalloc.start()
    start = time.perf_counter()
    try:
        code = main(argv)
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    out = capsys.readouterr()
    return code, out.err + out.out, seconds, peak


def test_every_command_refuses_every_bad_file_with_a_located_message(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MODELFORGE_DEBUG", raising=False)
    failures, tried = [], 0
    for case in corpus_cases(tmp_path):
        for command in COMMANDS:
            code, text, seconds, peak = _run(command, case, tmp_path, capsys)
            tried += 1
            expect = case.expect_finetunejob if command in ("plan", "run") else case.expect
            where = f"{case.path}:{case.line}:" if case.line else str(case.path)
            wrong = [
                f"exit {code}" * (code not in (1, 2)),
                "a traceback" * ("Traceback" in text or "internal error" in text),
                f"no {expect!r}" * (expect not in text),
                f"no {where!r}" * (where not in text),
                f"{seconds:.1f} s" * (seconds > RUNAWAY_SECONDS),
                f"{peak >> 20} MB" * (peak > RUNAWAY_BYTES),
            ]
            if any(wrong):
                failures.append(f"{command} {case.path.name}: {', '.join(w for w in wrong if w)}\n{text[:400]}")
    assert tried >= 4 * 60
    assert not failures, "\n".join(failures)


def test_the_operators_parsing_refuses_what_loads_with_problems_only():
    """What reaches the operator is JSON from the API server: every document that loads, as JSON, either
    parses or is refused with SpecError problems (the operator's InvalidSpec condition), never a crash."""
    for path in sorted(CORPUS.glob("*.yaml")):
        try:
            documents = load_documents(path)
        except SpecFileError:
            continue
        for doc in documents:
            body = json.loads(json.dumps(doc.data))
            problems = validate_document(body)
            try:
                parse_resource(body)
            except SpecError as exc:
                assert exc.problems == problems and all(p.message for p in problems), path.name
            else:
                assert problems == [], path.name


def test_duplicate_key_points_at_the_duplicate(capsys):
    path = CORPUS / "duplicate-key-field.yaml"
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:12: spec.hyperparameters.maxSteps: duplicate key 'maxSteps' (first at line 11)" in err


def test_dates_and_yaml_11_keys_read_as_kubernetes_reads_them(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("a: 2026-01-01\non: 1\n1: x\n<<: {b: 1}\nb: 2\n")
    (doc,) = load_documents(path)
    assert doc.data == {"a": "2026-01-01", "true": 1, "1": "x", "b": 2}


def test_a_utf8_bom_is_accepted(tmp_path, capsys):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (Path(__file__).parents[1] / "specs/valid/tiny-cpu.yaml").read_bytes())
    assert main(["validate", str(path)]) == 0


def test_skipped_documents_are_said(tmp_path, capsys):
    path = tmp_path / "with-pvc.yaml"
    path.write_text("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: models}\n---\n"
                    + (Path(__file__).parents[1] / "specs/valid/tiny-cpu.yaml").read_text())  # fmt: skip
    assert main(["plan", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"note: {path}:1: skipped a PersistentVolumeClaim 'models' (v1): not a ModelForge object" in err
    assert "skipped a ModelServe 'tiny' (modelforge.io/v1alpha1): this command takes FineTuneJob" in err


@pytest.mark.parametrize(
    "quantity", ["8Gi", "800Gi", "64Mi", "1Ti", "512Ki", "500m", "2", "1.5", "1.5G", "100M", "3k", "1e3", "2E", "250n"]
)
def test_quantities_parse_as_the_kubernetes_client_does(quantity):
    """api/base.py parses quantities itself (the api layer runs without the kubernetes client, e.g. on a GPU
    machine); the client's parse_quantity is the reference."""
    from kubernetes.utils import parse_quantity

    from modelforge.api.base import quantity_bytes

    assert quantity_bytes(quantity) == pytest.approx(float(parse_quantity(quantity)), rel=1e-12)
    assert quantity_bytes(7) == 7.0
