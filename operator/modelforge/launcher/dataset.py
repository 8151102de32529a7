"""Dataset pre-flight: check every row of every local dataset before a GPU is touched.

ms-swift drops bad rows with a warning, fails on a broken JSON line naming only the row, raises a bare
StopIteration on an empty file and ZeroDivisionError when every row is invalid. This module finds all
of that first and reports `file:line: what is wrong` for each row, plus rows ms-swift would silently drop
because they are longer than maxLength (when a tokenizer is available).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api.finetunejob import DatasetFormat
from .media import MediaChecker

LOCAL_SUFFIXES = (".jsonl", ".json")
MAX_PROBLEMS_SHOWN = 50

# ms-swift's accepted spellings (swift/dataset/preprocessor): role keys, content keys and role aliases.
ROLE_ALIASES = {
    "system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
    "bot": "assistant", "tool": "tool", "function": "tool", "observation": "tool", "tool_call": "tool_call",
    "tool_response": "tool",
}  # fmt: skip
QUERY_KEYS = ("query", "prompt", "input", "question")
RESPONSE_KEYS = ("response", "answer", "output", "completion", "targets", "target", "content")


@dataclass
class FileReport:
    """What pre-flight found in one dataset file."""

    path: str
    format: str | None = None
    rows: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)
    too_long: list[int] = field(default_factory=list)
    max_length: int | None = None
    token_lengths: list[int] = field(default_factory=list)
    formats_seen: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    @property
    def usable_rows(self) -> int:
        # a row with problems and too long counts once; a file-level problem (line 0, or the empty file's
        # line 1 with no rows) is no row: never "-1 usable"
        bad = {line for line, _ in self.problems} | set(self.too_long)
        return max(0, self.rows - len(bad))

    @property
    def ok(self) -> bool:
        return not self.problems and self.usable_rows > 0

    @property
    def mean_tokens(self) -> float | None:
        return sum(self.token_lengths) / len(self.token_lengths) if self.token_lengths else None

    def render(self) -> list[str]:
        """Human-readable lines: every problem as file:line, then a summary."""
        lines = [f"{self.path}:{line}: {message}" for line, message in self.problems[:MAX_PROBLEMS_SHOWN]]
        if len(self.problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"{self.path}: ... and {len(self.problems) - MAX_PROBLEMS_SHOWN} more problems")
        if self.too_long:
            shown = ", ".join(str(n) for n in self.too_long[:10])
            more = ", ..." if len(self.too_long) > 10 else ""
            lines.append(
                f"{self.path}: {len(self.too_long)} row(s) longer than maxLength {self.max_length} tokens would be "
                f"dropped silently by ms-swift (lines {shown}{more}); raise maxLength or shorten them"
            )
        summary = f"{self.path}: {self.rows} rows, format {self.format or 'unknown'}, {self.usable_rows} usable"
        if self.problems:
            summary += f", {len({line for line, _ in self.problems})} with problems"
        if self.token_lengths:
            summary += f", tokens mean {self.mean_tokens:.0f} / max {max(self.token_lengths)}"
        return [*lines, *(f"{self.path}: {note}" for note in self.notes), summary]


class RowError(ValueError):
    """A row that ms-swift cannot use; the message says why."""


def _text(value: Any, what: str) -> str:
    if value is None:
        raise RowError(f"{what} is null")
    if not isinstance(value, str):
        raise RowError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError(f"{what} is empty")
    return value


def _normalize_turns(turns: Any, key: str) -> list[dict[str, str]]:
    if not isinstance(turns, list) or not turns:
        raise RowError(f"`{key}` must be a non-empty list of turns")
    out = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RowError(f"{key}[{index}] must be an object with role and content")
        role_key = "role" if "role" in turn else "from" if "from" in turn else None
        content_key = "content" if "content" in turn else "value" if "value" in turn else None
        if role_key is None or content_key is None:
            raise RowError(f"{key}[{index}] needs role/content (or from/value), found {sorted(turn)}")
        raw_role = turn[role_key]
        role = ROLE_ALIASES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            allowed = ", ".join(sorted(set(ROLE_ALIASES)))
            raise RowError(f"{key}[{index}].{role_key} {raw_role!r} is not a known role ({allowed})")
        content = turn[content_key]
        if role == "assistant" and content is None and turn.get("tool_calls"):
            content = json.dumps(turn["tool_calls"])
        out.append({"role": role, "content": _text(content, f"{key}[{index}].{content_key}")})
    if not any(t["role"] == "assistant" for t in out):
        raise RowError(f"`{key}` has no assistant turn: there is nothing to learn from this row")
    if out[-1]["role"] != "assistant":
        raise RowError(f"`{key}` ends with a {out[-1]['role']} turn; the last turn must be the assistant's answer")
    return out


def _messages(row: dict[str, Any]) -> list[dict[str, str]]:
    key = next(k for k in ("messages", "conversations", "conversation") if k in row)
    return _normalize_turns(row[key], key)


def _alpaca(row: dict[str, Any]) -> list[dict[str, str]]:
    instruction = _text(row.get("instruction"), "instruction")
    extra = row.get("input")
    if extra is not None and not isinstance(extra, str):
        raise RowError(f"input must be a string, got {type(extra).__name__}")
    query = f"{instruction}\n{extra}" if extra else instruction
    turns = [{"role": "system", "content": _text(row["system"], "system")}] if row.get("system") else []
    return [
        *turns,
        {"role": "user", "content": query},
        {"role": "assistant", "content": _text(row.get("output"), "output")},
    ]


def _query_response(row: dict[str, Any]) -> list[dict[str, str]]:
    query_key = next((k for k in QUERY_KEYS if k in row), None)
    response_key = next((k for k in RESPONSE_KEYS if k in row and k != query_key), None)
    if query_key is None or response_key is None:
        raise RowError(f"needs a query ({'/'.join(QUERY_KEYS)}) and a response ({'/'.join(RESPONSE_KEYS[:4])}, ...)")
    turns = [{"role": "system", "content": _text(row["system"], "system")}] if row.get("system") else []
    for index, pair in enumerate(row.get("history") or []):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise RowError(f"history[{index}] must be a [query, response] pair")
        turns += [
            {"role": "user", "content": _text(pair[0], f"history[{index}][0]")},
            {"role": "assistant", "content": _text(pair[1], f"history[{index}][1]")},
        ]
    return [
        *turns,
        {"role": "user", "content": _text(row[query_key], query_key)},
        {"role": "assistant", "content": _text(row[response_key], response_key)},
    ]


def _text_row(row: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": _text(row.get("text"), "text")}]


NORMALIZERS: dict[str, Callable[[dict[str, Any]], list[dict[str, str]]]] = {
    DatasetFormat.MESSAGES: _messages,
    DatasetFormat.SHAREGPT: _messages,
    DatasetFormat.ALPACA: _alpaca,
    DatasetFormat.QUERY_RESPONSE: _query_response,
    DatasetFormat.TEXT: _text_row,
}


def detect_format(row: dict[str, Any]) -> str | None:
    """The layout of one row from its columns, as ms-swift's auto-detection sees it."""
    keys = set(row)
    if "messages" in keys:
        return DatasetFormat.MESSAGES
    if keys & {"conversations", "conversation"}:
        return DatasetFormat.SHAREGPT
    if "instruction" in keys and "output" in keys:
        return DatasetFormat.ALPACA
    if keys & set(QUERY_KEYS) and keys & set(RESPONSE_KEYS):
        return DatasetFormat.QUERY_RESPONSE
    if "text" in keys:
        return DatasetFormat.TEXT
    return None


MAX_ROW_BYTES = 8 * 1024 * 1024  # one row (a JSON line, an array element, a CSV record); far beyond any maxLength
MAX_JSON_DEPTH = 100  # brackets nested deeper than this are refused before json parses (its recursion is bounded)
READ_CHUNK = 1024 * 1024
# What ms-swift 4.6 loads from a local file (swift/dataset/loader.py _load_dataset_path): the extension picks HF
# datasets' builder (jsonl -> json, txt -> text, csv -> csv); a file without one fails deep in `datasets`.
SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".txt")
_BRACKETS = re.compile(rb"[\[\]{}]")
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _too_deep(raw: bytes) -> bool:
    """More than MAX_JSON_DEPTH nested brackets outside strings (a linear scan, no recursion)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for match in _BRACKETS.finditer(_STRINGS.sub(b'""', raw)):
        depth += 1 if match.group() in (b"[", b"{") else -1
        if depth > MAX_JSON_DEPTH:
            return True
    return False


def _limit_message() -> str:
    return f"row is longer than the limit of {MAX_ROW_BYTES} bytes per row; split or shorten it"


def _decode(raw: bytes) -> str | RowError:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RowError(f"not valid UTF-8 (byte {exc.start + 1} of the line); re-save the file as UTF-8")


def _parse_int(digits: str) -> int | float:
    """An integer past Python's 4300-digit conversion limit as a float, as ms-swift's loader (pyarrow) reads it."""
    return int(digits) if len(digits) <= 4000 else float(digits)


def _parse(raw: bytes) -> Any | RowError:
    """One JSON value from one line, bounded: depth checked first, numbers and errors reported, never raised."""
    if _too_deep(raw):
        return RowError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    text = _decode(raw)
    if isinstance(text, RowError):
        return text
    try:
        return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        return RowError(f"invalid JSON: {exc.msg} at column {exc.colno}")
    except (ValueError, RecursionError) as exc:  # nothing known reaches here; a row error, not a crash
        return RowError(f"invalid JSON: {str(exc).split(';')[0]}")


def _lines(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """(line number, raw bytes without the newline; None for a line over MAX_ROW_BYTES, skipped unread)."""
    with path.open("rb") as handle:
        number = 0
        while True:
            raw = handle.readline(MAX_ROW_BYTES + 1)
            if not raw:
                return
            number += 1
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):
                while (rest := handle.readline(READ_CHUNK)) and not rest.endswith(b"\n"):
                    pass
                yield number, None
                continue
            yield number, raw.rstrip(b"\r\n")


def iter_rows(path: Path) -> Iterator[tuple[int, Any | RowError]]:
    """(line, parsed row or RowError) for a JSONL file, a JSON array file, a CSV file with a header or a text
    file (one `text` row per line), in bounded memory per row: ms-swift (HF datasets) reads a .json file as JSON
    Lines when it is not an array and a .jsonl file holding an array as the array; a UTF-8 BOM is skipped
    before JSON Lines and CSV (not before an array: ms-swift fails on that)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _iter_csv(path)
        return
    with path.open("rb") as handle:
        head = handle.read(READ_CHUNK).lstrip(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"[") and suffix != ".txt":
        yield from _iter_json_array(path)
        return
    for number, raw in _lines(path):
        if raw is None:
            yield number, RowError(_limit_message())
        elif not raw.strip():
            continue
        elif suffix == ".txt":
            text = _decode(raw)
            yield number, text if isinstance(text, RowError) else {"text": text}
        else:
            yield number, _parse(raw)


def _iter_csv(path: Path) -> Iterator[tuple[int, Any | RowError]]:
    """CSV as ms-swift loads it (the datasets library): a header row names the columns, every value is a
    string. Before, a .csv was accepted as local and then parsed as JSON Lines, failing on every row."""
    for number, raw in _lines(path):  # bounded pass first: the text reader would fail a whole chunk, lineless
        text = _decode(raw) if raw is not None else None
        if isinstance(text, RowError):
            yield number, RowError(f"{text}; rows after it were not read")
            return
    csv.field_size_limit(MAX_ROW_BYTES)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            if not reader.fieldnames:
                yield 1, RowError("a .csv dataset needs a header row naming its columns (e.g. query,response)")
                return
            for row in reader:
                if None in row:
                    yield reader.line_num, RowError(f"more values than the {len(reader.fieldnames)} header columns")
                    continue
                yield reader.line_num, {k: v for k, v in row.items() if v is not None}
        except csv.Error as exc:
            yield reader.line_num, RowError(f"invalid CSV: {exc}; rows after it were not read")
        except UnicodeDecodeError:
            yield (
                reader.line_num + 1,
                RowError("not valid UTF-8; re-save the file as UTF-8; rows after it were not read"),
            )


def _iter_json_array(path: Path) -> Iterator[tuple[int, Any | RowError]]:
    """A JSON array file. The whole file is parsed at once, as HF datasets does, but each element is bounded:
    nesting is checked before parsing and an element over MAX_ROW_BYTES is refused."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):  # JSON Lines after a BOM loads; an array after one does not (ujson)
        yield 1, RowError("a JSON array after a UTF-8 byte-order mark: ms-swift cannot load it; save without BOM")
        return
    text = _decode(raw)
    if isinstance(text, RowError):
        bad = raw.decode("utf-8", errors="replace")
        line = bad.count("\n", 0, bad.index("\ufffd")) + 1
        yield line, RowError("not valid UTF-8; re-save the file as UTF-8; rows after it were not read")
        return
    if _too_deep(raw.strip()[1:-1]):
        yield 1, RowError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels; rows were not read")
        return
    decoder = json.JSONDecoder(parse_int=_parse_int)
    position = len(text) - len(text.lstrip()) + 1
    line, counted = 1, 0

    def line_at(offset: int) -> int:  # counted incrementally: a big array stays linear
        nonlocal line, counted
        line += text.count("\n", counted, offset)
        counted = offset
        return line

    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text):
            yield line_at(position), RowError("invalid JSON: the array is not closed with ]")
            return
        if text[position] == "]":
            rest = text[position + 1 :]
            if rest.strip():
                at = position + 1 + len(rest) - len(rest.lstrip())
                yield (
                    line_at(at),
                    RowError(
                        "invalid JSON: text after the closing ] of the array; remove it (ms-swift would fail to load "
                        "the whole file)"
                    ),
                )
            return
        row_line = line_at(position)
        start = position
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            yield exc.lineno, RowError(f"invalid JSON: {exc.msg} at column {exc.colno}; rows after it were not read")
            return
        except (ValueError, RecursionError) as exc:
            yield row_line, RowError(f"invalid JSON: {str(exc).split(';')[0]}; rows after it were not read")
            return
        if position - start > MAX_ROW_BYTES:
            yield row_line, RowError(_limit_message())
            continue
        yield row_line, value


TokenCounter = Callable[[list[dict[str, str]]], int]


def check_file(
    path: Path,
    *,
    fmt: str = DatasetFormat.AUTO,
    max_length: int | None = None,
    count_tokens: TokenCounter | None = None,
    media_root: Path | None = None,
) -> FileReport:
    """Check every row of one local dataset file (and the media its rows name: launcher/media.py)."""
    report = FileReport(str(path), max_length=max_length)
    if not path.exists():
        report.problems.append((0, "file not found: check the path (in a pod: the claim and subPath)"))
        return report
    if path.is_dir():
        report.problems.append((0, "is a directory; give the dataset file itself"))
        return report
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        report.problems.append(
            (0, f"ms-swift cannot load a file ending in {path.suffix or '(no extension)'!r}: name it .jsonl, "
                ".json, .csv or .txt after what it holds")
        )  # fmt: skip
        return report
    expected = None if fmt == DatasetFormat.AUTO else str(fmt)
    media = MediaChecker(path.parent, media_root)
    for line, row in iter_rows(path):
        report.rows += 1
        if isinstance(row, RowError):
            report.problems.append((line, str(row)))
            continue
        if not isinstance(row, dict):
            report.problems.append((line, f"a row must be a JSON object, got {type(row).__name__}"))
            continue
        detected = detect_format(row)
        if detected is None:
            report.problems.append(
                (line, f"unknown layout: columns {sorted(row)[:8]}; expected messages, conversations, "
                       "instruction+output, query+response or text")
            )  # fmt: skip
            continue
        report.formats_seen[detected] += 1
        layout = expected or report.format or detected
        report.format = report.format or layout
        if detected != layout and not {detected, layout} <= {DatasetFormat.MESSAGES, DatasetFormat.SHAREGPT}:
            report.problems.append((line, f"row is in {detected} layout but the dataset is {layout}"))
            continue
        try:
            turns = NORMALIZERS[layout](row)
        except RowError as exc:
            report.problems.append((line, str(exc)))
            continue
        report.problems.extend((line, problem) for problem in media.row(row))
        if count_tokens is not None:
            length = count_tokens(turns)
            report.token_lengths.append(length)
            if max_length is not None and length > max_length:
                report.too_long.append(line)
    report.notes.extend(media.notes())
    if report.rows == 0:
        report.problems.append((1, "the file has no rows (ms-swift would fail with a bare StopIteration)"))
    return report


def tokenizer_counter(model_path: str) -> TokenCounter:
    """Count tokens the way training sees them: the chat template when the tokenizer has one."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def count(turns: list[dict[str, str]]) -> int:
        if getattr(tokenizer, "chat_template", None):
            # transformers 5 returns a BatchEncoding here, 4.x a plain list of ids
            encoded: Any = tokenizer.apply_chat_template(turns, tokenize=True)
            return len(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
        return len(tokenizer("\n".join(t["content"] for t in turns))["input_ids"])

    return count


def is_local_source(source: str) -> bool:
    """A path (checked here) rather than a hub id (passed through to ms-swift)."""
    return (
        source.startswith(("/", "./", "../", "~"))
        or source.endswith((*LOCAL_SUFFIXES, ".csv", ".txt"))
        or Path(source).exists()
    )
