"""Read spec files (multi-document YAML) and point problems at `file:line`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Document:
    """One YAML document of a file, with the node tree kept for line numbers."""

    path: Path
    index: int  # 1-based position in the file
    data: Any
    node: yaml.Node | None

    def line_of(self, field_path: str) -> int | None:
        """1-based line of the deepest existing node on `field_path` (e.g. spec.datasets[0].source)."""
        node = self.node
        if node is None:
            return None
        line = node.start_mark.line + 1
        for name, index in _PART.findall(field_path):
            child = None
            if name and isinstance(node, yaml.MappingNode):
                child = next((v for k, v in node.value if getattr(k, "value", None) == name), None)
            elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
                child = node.value[int(index)]
            if child is None:
                break
            node, line = child, child.start_mark.line + 1
        return line


class SpecFileError(ValueError):
    """A file that cannot be read as YAML; the message names file:line."""


def load_documents(path: Path) -> list[Document]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecFileError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecFileError(f"{path}:{line}: not UTF-8 text (byte {exc.start}): save the file as UTF-8") from exc
    try:
        nodes = [n for n in yaml.compose_all(text, Loader=yaml.SafeLoader)]
        datas = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SpecFileError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    except (ValueError, RecursionError) as exc:  # e.g. an integer too long to convert, nested aliases
        raise SpecFileError(f"{path}: a value cannot be read: {str(exc)[:200]}") from exc
    docs = []
    position = 0
    for node, data in zip(nodes, datas, strict=True):
        position += 1
        if data is None:
            continue
        docs.append(Document(path, position, data, node))
    return docs
