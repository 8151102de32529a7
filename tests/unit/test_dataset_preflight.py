"""Dataset pre-flight: every row checked, every problem reported as file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelforge.cli import main
from modelforge.launcher.dataset import check_file, detect_format


def write(tmp_path: Path, name: str, rows: list) -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD_MESSAGES = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        (GOOD_MESSAGES, "messages"),
        ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "sharegpt"),
        ({"instruction": "translate", "input": "hola", "output": "hello"}, "alpaca"),
        ({"query": "q", "response": "a"}, "query-response"),
        ({"input": "q", "output": "a"}, "query-response"),
        ({"text": "plain pretraining text"}, "text"),
        ({"foo": 1}, None),
    ],
)
def test_detect_format(row, fmt):
    assert detect_format(row) == fmt


def test_good_file_of_each_format(tmp_path):
    for name, row in [
        ("m.jsonl", GOOD_MESSAGES),
        ("a.jsonl", {"instruction": "i", "output": "o"}),
        ("q.jsonl", {"query": "q", "response": "r", "history": [["q0", "r0"]], "system": "s"}),
        ("t.jsonl", {"text": "t"}),
    ]:
        report = check_file(write(tmp_path, name, [row] * 3))
        assert report.ok and report.rows == 3 and report.usable_rows == 3, report.render()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"messages": [', "invalid JSON"),
        ({"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "a"}]},
         "messages[0].content is null"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
         "messages[1].content is empty"),
        ({"messages": [{"role": "customer", "content": "q"}, {"role": "assistant", "content": "a"}]},
         "messages[0].role 'customer' is not a known role"),
        ({"messages": [{"role": "user", "content": "q"}]}, "has no assistant turn"),
        ({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},
         "ends with a user turn"),
        ({"messages": []}, "must be a non-empty list"),
        ({"prompt_text": "x", "label": "y"}, "unknown layout"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 5}]},
         "messages[1].content must be a string"),
        ([1, 2], "must be a JSON object"),
    ],
)  # fmt: skip
def test_each_bad_row_is_reported_at_its_line(tmp_path, line, expected):
    path = write(tmp_path, "d.jsonl", [GOOD_MESSAGES, line, GOOD_MESSAGES])
    report = check_file(path)
    assert not report.ok
    assert len(report.problems) == 1
    number, message = report.problems[0]
    assert number == 2 and expected in message, message
    assert report.usable_rows == 2
    assert f"{path}:2: " in "\n".join(report.render())


def test_every_row_is_checked_not_just_the_first(tmp_path):
    rows = [GOOD_MESSAGES] * 5 + ["not json"] * 3 + [{"messages": [{"role": "user", "content": "q"}]}] * 2
    report = check_file(write(tmp_path, "d.jsonl", rows))
    assert [n for n, _ in report.problems] == [6, 7, 8, 9, 10]
    assert report.render()[-1].endswith("10 rows, format messages, 5 usable, 5 with problems")


def test_mixed_layouts_are_flagged(tmp_path):
    report = check_file(write(tmp_path, "d.jsonl", [GOOD_MESSAGES, {"text": "x"}]))
    assert report.problems == [(2, "row is in text layout but the dataset is messages")]


def test_forced_format_is_enforced(tmp_path):
    report = check_file(write(tmp_path, "d.jsonl", [GOOD_MESSAGES]), fmt="alpaca")
    assert report.problems == [(1, "row is in messages layout but the dataset is alpaca")]


@pytest.mark.parametrize(
    ("content", "expected"),
    [("", "the file has no rows"), ("\n\n", "the file has no rows")],
)
def test_empty_file(tmp_path, content, expected):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    report = check_file(path)
    assert not report.ok and expected in report.problems[0][1]


def test_missing_file(tmp_path):
    report = check_file(tmp_path / "nope.jsonl")
    assert not report.ok and "file not found" in report.problems[0][1]


def test_json_array_rows_get_their_own_line_numbers(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": null},\n  {"text": "c"}\n]\n')
    report = check_file(path)
    assert report.rows == 3 and report.problems == [(3, "text is null")]


def test_broken_json_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": \n')
    report = check_file(path)
    assert report.problems and "invalid JSON" in report.problems[-1][1]


def test_rows_over_max_length_are_counted(tmp_path):
    rows = [{"text": "short"}, {"text": "x " * 50}, {"text": "y " * 80}]
    report = check_file(write(tmp_path, "d.jsonl", rows), max_length=20, count_tokens=lambda turns: len(
        turns[0]["content"].split()))  # fmt: skip
    assert report.too_long == [2, 3]
    assert report.ok  # usable rows remain: a warning, not a failure
    assert "2 row(s) longer than maxLength 20 tokens would be dropped silently" in "\n".join(report.render())


def test_validate_data_cli(tmp_path, capsys):
    good = write(tmp_path, "good.jsonl", [GOOD_MESSAGES])
    bad = write(tmp_path, "bad.jsonl", [GOOD_MESSAGES, "{oops"])
    assert main(["validate-data", str(good), "org/hub-dataset"]) == 0
    out = capsys.readouterr().out
    assert "org/hub-dataset: hub dataset, passed through" in out
    assert main(["validate-data", str(good), str(bad)]) == 1
    captured = capsys.readouterr()
    assert f"{bad}:2: invalid JSON" in captured.out
    assert "1 dataset file(s) unusable" in captured.err


def test_csv_datasets_are_read_as_csv(tmp_path):
    """ms-swift loads .csv with a header; pre-flight used to parse it as JSON Lines and fail every row."""
    from modelforge.launcher.dataset import check_file

    good = tmp_path / "qa.csv"
    good.write_text('query,response\n"How do I reset it?","Open Settings, then Reset."\nHi,Hello\n')
    report = check_file(good)
    assert report.rows == 2 and not report.problems, report.problems
    bad = tmp_path / "bad.csv"
    bad.write_text("query,response\nonly one column,and,too many\nfoo,bar\n")
    report = check_file(bad)
    assert [line for line, _ in report.problems] == [2], report.problems


# Issue 15: what ms-swift accepts and what it fails on, and bounded resources per row.
def test_bom_jsonl_and_json_lines_inside_a_json_file_are_accepted(tmp_path):
    bom = tmp_path / "b.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD_MESSAGES).encode() + b"\n")
    lines = write(tmp_path, "l.json", [GOOD_MESSAGES, GOOD_MESSAGES])
    assert check_file(bom).ok and check_file(lines).usable_rows == 2


@pytest.mark.parametrize(
    ("name", "content", "line", "expected"),
    [
        ("u.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', 2, "not valid UTF-8"),
        ("u.csv", b"query,response\nq,r\nq\xff,r\n", 3, "not valid UTF-8"),
        ("t.json", b'[{"text": "a"}]\n\ngarbage', 3, "text after the closing ]"),
        ("d.jsonl", b'{"text": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}\n", 1, "nested deeper than 100"),
        ("d.json", b'[{"text": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}]", 1, "nested deeper than 100"),
        ("data", b'{"text": "a"}\n', 0, "(no extension)"),
    ],
)  # fmt: skip
def test_what_ms_swift_would_fail_on_is_reported_at_its_line(tmp_path, name, content, line, expected):
    path = tmp_path / name
    path.write_bytes(content)
    report = check_file(path)
    assert not report.ok
    assert any(n == line and expected in message for n, message in report.problems), report.render()
    assert "-1 usable" not in "\n".join(report.render())


def test_a_line_over_the_row_limit_is_refused_unread(tmp_path, monkeypatch):
    from modelforge.launcher import dataset

    monkeypatch.setattr(dataset, "MAX_ROW_BYTES", 1024)
    path = tmp_path / "big.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "' + b"x" * 5000 + b'"}\n{"text": "after"}\n')
    report = check_file(path)
    assert report.problems == [(2, "row is longer than the limit of 1024 bytes per row; split or shorten it")]
    assert report.rows == 3 and report.usable_rows == 2


def test_an_empty_file_is_never_minus_one_usable(tmp_path):
    report = check_file(write(tmp_path, "e.jsonl", []))
    assert report.usable_rows == 0 and "0 usable" in report.render()[-1]


def test_a_missing_path_looking_source_is_local_and_named(tmp_path):
    from modelforge.launcher.dataset import is_local_source

    for source in ("./nope", "/nope/x", "nope.jsonl", "data/nope.csv"):
        assert is_local_source(source), source
    assert not is_local_source("tatsu-lab/alpaca")
    report = check_file(tmp_path / "nope.jsonl")
    assert "file not found" in report.render()[0] and str(tmp_path / "nope.jsonl") in report.render()[0]


def test_a_5000_digit_number_is_read_as_ms_swift_reads_it(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_bytes(b'{"text": "a", "n": ' + b"9" * 5000 + b"}\n")
    assert check_file(path).ok
