"""Differential test: the dataset pre-flight and ms-swift's real loader agree on which files train.

Each case is a small dataset file made here. ms-swift 4.6's own `swift.dataset.load_dataset` (the function
`swift sft` calls: HF datasets' json/csv/text builders, then ms-swift's preprocessors) loads every file in
one child process (its import alone takes ~12 s; a child also keeps its warnings and caches out of pytest).
A file "trains" for ms-swift when it loads and keeps every row (ms-swift drops bad rows with a warning, which
pre-flight reports as a problem); for pre-flight when its report is ok. The two must agree on every case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from modelforge.launcher.dataset import check_file

pytestmark = pytest.mark.integration

BOM = b"\xef\xbb\xbf"


def _jsonl(*rows: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


QR = {"query": "q", "response": "r"}
SHAREGPT = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
MSG = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}

# name -> (file name, content, rows in the file). Both must accept the first group and refuse the second.
ACCEPTED = {
    "jsonl messages": ("a.jsonl", _jsonl(MSG, MSG), 2),
    "jsonl with a UTF-8 BOM": ("a.jsonl", BOM + _jsonl(QR, QR), 2),
    "jsonl with CRLF and blank lines": ("a.jsonl", _jsonl(QR).replace(b"\n", b"\r\n") + b"\r\n\n" + _jsonl(QR), 2),
    "JSON Lines inside a .json": ("a.json", _jsonl(QR, QR, QR), 3),
    "JSON array .json": ("a.json", json.dumps([QR, QR]).encode(), 2),
    "JSON Lines .json with a BOM": ("a.json", BOM + _jsonl(MSG), 1),
    "JSON array inside a .jsonl": ("a.jsonl", json.dumps([QR, QR], indent=2).encode(), 2),
    "sharegpt": ("a.jsonl", _jsonl(SHAREGPT), 1),
    "alpaca": ("a.jsonl", _jsonl({"instruction": "i", "input": "x", "output": "o"}), 1),
    "csv query,response": ("a.csv", b"query,response\nq,r\nq2,\"r, 2\"\n", 2),
    "csv instruction,input,output": ("a.csv", b"instruction,input,output\ni,x,o\n", 1),
    "csv with a BOM": ("a.csv", BOM + b"prompt,completion\np,c\n", 1),
    "plain text (.txt): one row a line": ("a.txt", b"first line\nsecond line\n", 2),
    "a 5000-digit number in another column": ("a.jsonl", b'{"text": "a", "n": ' + b"9" * 5000 + b"}\n", 1),
    "unicode text": ("a.jsonl", _jsonl({"query": "caf\u00e9 \u4f60\u597d", "response": "\U0001f600"}), 1),
}  # fmt: skip
REFUSED = {
    "invalid UTF-8 in a jsonl": ("a.jsonl", _jsonl(QR) + b'{"query": "q\xff", "response": "r"}\n', 2),
    "invalid UTF-8 in a csv": ("a.csv", b"query,response\nq\xff,r\n", 1),
    "invalid UTF-8 in a JSON array": ("a.json", b'[{"query": "q\xff", "response": "r"}]', 1),
    "text after the array": ("a.json", json.dumps([QR]).encode() + b"\n{}", 1),
    "array not closed": ("a.json", b'[{"query": "q", "response": "r"},', 1),
    "no extension": ("data", _jsonl(QR), 1),
    "unknown extension": ("a.tsv", b"query\tresponse\nq\tr\n", 1),
    "broken JSON line": ("a.jsonl", _jsonl(QR) + b'{"query": "q", \n', 2),
    "unknown columns": ("a.jsonl", _jsonl({"prompt_text": "x", "label": "y"}), 1),
    "unknown csv columns": ("a.csv", b"prompt_text,label\nx,y\n", 1),
    "empty file": ("a.jsonl", b"", 0),
    "empty .csv": ("a.csv", b"", 0),
    "brackets nested 200 deep": ("a.jsonl", b'{"text": "a", "x": ' + b"[" * 200 + b"]" * 200 + b"}\n", 1),
    "JSON array after a BOM": ("a.json", BOM + json.dumps([MSG]).encode(), 1),
    "a row that is not an object": ("a.jsonl", _jsonl(QR, [1, 2]), 2),
}  # fmt: skip
# Rows ms-swift's loader keeps and its template drops at encoding time with a warning (not run here: that needs
# a model); pre-flight refuses them at their line so a run does not train on less data than the user gave.
DROPPED_LATER = {
    "a null response among good rows": ("a.jsonl", _jsonl(QR, {"query": "q", "response": None}, QR), 3, 2),
    "no assistant turn": ("a.jsonl", _jsonl(MSG, {"messages": [{"role": "user", "content": "q"}]}), 2, 2),
}  # fmt: skip

LOADER = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from swift.dataset import load_dataset
out = {}
for path in json.loads(sys.argv[1]):
    try:
        train, _ = load_dataset([path], num_proc=1)
        out[path] = len(train)
    except BaseException as exc:  # what `swift sft` would die of
        out[path] = f"{type(exc).__name__}: {str(exc)[:200]}"
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    """{case: (ms-swift's verdict, pre-flight's report)} for every case, ms-swift in one child process."""
    root = tmp_path_factory.mktemp("differential")
    cases = {**ACCEPTED, **REFUSED, **DROPPED_LATER}
    paths = {}
    for index, (name, (file_name, content, *_)) in enumerate(cases.items()):
        folder = root / str(index)
        folder.mkdir()
        (folder / file_name).write_bytes(content)
        paths[name] = folder / file_name
    env = {**os.environ, "MODELSCOPE_CACHE": str(root / "cache"), "HF_HOME": str(root / "hf"),
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps([str(p) for p in paths.values()])],
        capture_output=True, text=True, env=env, timeout=240, check=False,
    )  # fmt: skip
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, done.stderr[-3000:]
    loaded = json.loads(line.removeprefix("RESULT "))
    return {name: (loaded[str(path)], check_file(path)) for name, path in paths.items()}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_both_accept(verdicts, name):
    swift, report = verdicts[name]
    assert swift == ACCEPTED[name][2], f"ms-swift: {swift}"
    assert report.ok and report.usable_rows == ACCEPTED[name][2], report.render()


@pytest.mark.parametrize("name", list(REFUSED))
def test_both_refuse(verdicts, name):
    swift, report = verdicts[name]
    rows = REFUSED[name][2]
    assert isinstance(swift, str) or swift < rows, f"ms-swift loaded every row ({swift}): pre-flight must not refuse"
    assert not report.ok, report.render()
    rendered = "\n".join(report.render())
    assert f"{report.path}:" in rendered and "-1 usable" not in rendered and "Traceback" not in rendered


@pytest.mark.parametrize("name", list(DROPPED_LATER))
def test_rows_the_template_would_drop_are_refused_at_their_line(verdicts, name):
    swift, report = verdicts[name]
    _, _, rows, bad_line = DROPPED_LATER[name]
    assert swift == rows, f"ms-swift's loader: {swift}"
    assert not report.ok and [line for line, _ in report.problems] == [bad_line], report.render()
