"""Batch inference over a question file and one-shot chat, on a local model, with the real `swift infer`."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .dataset import RowError, iter_rows
from .outcome import classify
from .remote_code import TRUST_ENV
from .supervise import supervise


class QuestionFileError(ValueError):
    """A question file that cannot be read; the message names file:line."""


class InferenceError(RuntimeError):
    """swift infer failed; the message carries the end of its output."""


def load_questions(path: Path, system: str | None = None) -> list[dict[str, Any]]:
    """Rows of {"messages": [...]} from a .txt file (one question per line) or JSONL/JSON rows with
    `messages` (the assistant turn, if any, is dropped), `query`/`question`/`prompt`, or `text`."""
    if not path.exists():
        raise QuestionFileError(f"{path}: file not found")
    rows: list[dict[str, Any]] = []
    items: list[tuple[int, Any]]
    if path.suffix == ".txt":
        lines = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
        items = [(n, {"query": text}) for n, text in lines]
    else:
        items = list(iter_rows(path))
    for line, item in items:
        if isinstance(item, RowError) or not isinstance(item, dict):
            raise QuestionFileError(f"{path}:{line}: {item if isinstance(item, RowError) else 'not a JSON object'}")
        messages: list[dict[str, Any]]
        if isinstance(item.get("messages"), list):
            messages = [m for m in item["messages"] if m.get("role") != "assistant"]
        else:
            query = next((item[k] for k in ("query", "question", "prompt", "text", "instruction") if k in item), None)
            if not isinstance(query, str) or not query.strip():
                raise QuestionFileError(f"{path}:{line}: no question (messages, query, question, prompt or text)")
            messages = [{"role": "user", "content": query}]
        if system and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": system}, *messages]
        media = {key: item[key] for key in ("images", "videos", "audios") if key in item}
        rows.append({"messages": messages, **media})
    if not rows:
        raise QuestionFileError(f"{path}: no questions")
    return rows


@dataclass(frozen=True)
class LocalModel:
    model: str | None = None
    adapter: str | None = None
    model_type: str | None = None
    template: str | None = None
    trust_remote_code: bool = False  # the model's own code (launcher/remote_code.py); off unless asked
    extra: tuple[str, ...] = ()  # more `swift infer` arguments (a QLoRA job's quantization: launcher/argv.py)

    def args(self) -> list[str]:
        args = [*self.extra]
        if self.model:
            args += ["--model", self.model]
        if self.adapter:
            args += ["--adapters", self.adapter]
        if self.model_type:
            args += ["--model_type", self.model_type]
        if self.template:
            args += ["--template", self.template]
        return args


WRITE_BATCH = 1  # swift infer writes its results every this many rows (what a cut run keeps); the pt backend
# answers one question at a time anyway (max_batch_size 1)


def swift_answers(
    target: LocalModel,
    rows: list[dict[str, Any]],
    *,
    max_new_tokens: int = 256,
    deadline: float | None = None,
    env: Mapping[str, str] | None = None,
    sink: IO[str] | None = None,
) -> tuple[list[str], bool]:
    """The answers of `swift infer --infer_backend pt` (greedy) to `rows`, in order, and whether `deadline`
    (time.monotonic()) stopped it: then the answers are those of the leading rows written before it."""
    with tempfile.TemporaryDirectory(prefix="modelforge-infer-") as tmp:
        questions = Path(tmp) / "questions.jsonl"
        questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
        raw = Path(tmp) / "raw.jsonl"
        argv = [sys.executable, "-m", "modelforge.launcher.remote_code", "infer", *target.args(),
                "--infer_backend", "pt", "--val_dataset", str(questions), "--result_path", str(raw),
                "--max_new_tokens", str(max_new_tokens), "--temperature", "0", "--stream", "false",
                "--write_batch_size", str(WRITE_BATCH)]  # fmt: skip
        base = dict(os.environ if env is None else env)
        for key in ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
            base.pop(key, None)  # one process: a training pod's torchrun variables would start ranks
        child_env = {**base, "TOKENIZERS_PARALLELISM": "false", TRUST_ENV: "1" if target.trust_remote_code else "0"}

        def out_of_time() -> str | None:
            return "the time budget ran out" if deadline is not None and time.monotonic() > deadline else None

        finished = supervise(argv, env=child_env, sink=sink, tick=out_of_time if deadline is not None else None)
        results = []
        if raw.exists():
            for line in raw.read_text().splitlines():
                try:
                    results.append(json.loads(line))
                except ValueError:
                    break  # a line cut by the stop
        cut = finished.stopped is not None
        if not cut and (finished.returncode != 0 or len(results) != len(rows)):
            _, decisive = classify(finished.tail, interrupted=finished.interrupted)
            cause = decisive[-1].strip()[:300] if decisive else "no error line"
            tail = "".join(finished.tail[-10:])
            raise InferenceError(f"swift infer failed (exit {finished.returncode}): {cause}\n{tail}")
    return [str(r.get("response") or "") for r in results[: len(rows)]], cut


def infer_local(
    target: LocalModel, rows: list[dict[str, Any]], output: Path, *, max_new_tokens: int = 256
) -> list[dict[str, Any]]:
    """Answer every row with `swift infer --infer_backend pt`; results (one JSON per line) go to `output`."""
    output.parent.mkdir(parents=True, exist_ok=True)
    texts, _ = swift_answers(target, rows, max_new_tokens=max_new_tokens)
    answers = [{"messages": row["messages"], "response": text} for row, text in zip(rows, texts, strict=True)]
    output.write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers))
    return answers
