"""Read spec files (multi-document YAML) and point problems at `file:line`.

One reader for every command (validate, plan, render, run): whatever a file holds, the result is either
documents or a SpecFileError that names `file[:line]`, the field where there is one, and what to do —
never a traceback. The reader accepts what `kubectl apply` turns into JSON and refuses, before anything
expands, what would cost time or memory out of proportion to a spec: it is plain YAML 1.1 (PyYAML's safe
loader) with these limits:

- the file is at most MAX_FILE_BYTES, UTF-8 (a BOM is allowed, as kubectl allows it);
- aliases may share a value but a document expands to at most MAX_NODES values and MAX_DEPTH levels, and
  no alias may refer to the node that contains it (the "billion laughs" and self-reference cases);
- every value is a JSON value: strings (dates stay strings, as Kubernetes reads them), integers within 64
  bits, finite floats, booleans, null, lists and mappings with scalar keys; `!!binary`, `!!set`, `!!python/…`
  and other tags are refused with the tag's name; a string may not hold a NUL character;
- a key appears once per mapping (the API server keeps the last one silently; here the duplicate is named).

`select` then sorts documents into ours (FineTuneJob / ModelServe, or anything claiming modelforge.io) and
the rest (PVCs, Secrets beside an example), which are skipped with a note rather than silently.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")

MAX_FILE_BYTES = 1 << 20  # the API server refuses objects over 1.5 MiB; a spec file is far smaller
MAX_NODES = 20_000  # values per document after aliases expand (the largest example has a few hundred)
MAX_DEPTH = 50  # nesting levels per document (the deepest field of our kinds is under 15)
OUR_GROUP = "modelforge.io"
OUR_KINDS = ("FineTuneJob", "ModelServe")


@dataclass(frozen=True)
class Document:
    """One YAML document of a file, with the node tree kept for line numbers."""

    path: Path
    index: int  # 1-based position in the file
    data: Any
    node: yaml.Node | None

    @property
    def line(self) -> int:
        """1-based line where the document's content starts."""
        return self.node.start_mark.line + 1 if self.node is not None else 1

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

    def where(self, field_path: str = "") -> str:
        """`file:line` of a field (or of the document), the prefix of every message about it."""
        return f"{self.path}:{self.line_of(field_path) or self.line}"

    def describe(self) -> str:
        """The document as a person names it: kind, name and apiVersion where it has them."""
        data = self.data if isinstance(self.data, dict) else {}
        meta = data.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        kind = data.get("kind")
        text = f"a {kind}" if isinstance(kind, str) and kind else "an object without kind"
        if isinstance(name, str) and name:
            text += f" {name!r}"
        version = data.get("apiVersion")
        return text + (f" ({version})" if isinstance(version, str) and version else "")


class SpecFileError(ValueError):
    """A file that cannot be read as a spec; the message names file[:line] and what to do."""


def _timestampless_resolvers() -> dict[Any, Any]:
    """SafeLoader's implicit resolvers less the timestamp one: `2026-01-01` stays the string Kubernetes sees."""
    return {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def _code(character: Any) -> int:
    return character if isinstance(character, int) else ord(str(character)[:1] or "\0")


def _refuse_base60(node: yaml.ScalarNode) -> None:
    if ":" in str(node.value):
        raise ConstructorError(
            None,
            None,
            f"{node.value} is a base-60 number to YAML 1.1 but a string to Kubernetes: quote it, or write the number",
            node.start_mark,
        )


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader constrained to the JSON values a Kubernetes object can hold."""

    yaml_implicit_resolvers = _timestampless_resolvers()
    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """Stop at MAX_DEPTH levels while composing, before Python's recursion limit (slow) is reached."""
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConstructorError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise ConstructorError(None, None, f"expected a mapping, found {type(node).__name__}", node.start_mark)
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:  # the mapping's own keys; `<<` merges may be overridden, as in YAML
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConstructorError(
                    None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
                )
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = _json_key(self.construct_object(key_node, deep=True))
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first}): keep one of them", key_node.start_mark
                )
            seen[key] = key_node
        self.flatten_mapping(node)  # `<<` merges first, the mapping's own keys after them (they win)
        # Keys as Kubernetes reads them: YAML 1.1's `on:`/`yes:` and numbers become strings in JSON.
        return {
            _json_key(self.construct_object(key_node, deep=True)): self.construct_object(value_node, deep=deep)
            for key_node, value_node in node.value
        }

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        _refuse_base60(node)
        digits = str(node.value).replace("_", "").lstrip("+-")
        if len(digits) > 30:  # before int() converts it: a 5000-digit integer costs time and int() refuses it
            raise ConstructorError(None, None, f"integer with {len(digits)} digits is out of range", node.start_mark)
        value: int = super().construct_yaml_int(node)
        if not -(2**63) <= value < 2**63:
            raise ConstructorError(None, None, f"integer {value} is out of range (64-bit)", node.start_mark)
        return value

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        _refuse_base60(node)
        value: float = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise ConstructorError(
                None, None, f"{node.value} is not a number JSON can carry: write a finite number", node.start_mark
            )
        return value

    def construct_yaml_str(self, node: yaml.ScalarNode) -> str:
        value: str = super().construct_yaml_str(node)
        if "\x00" in value:
            raise ConstructorError(None, None, "a string holds a NUL character (\\0): remove it", node.start_mark)
        return value

    def construct_refused(self, node: yaml.Node) -> Any:
        tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
        raise ConstructorError(
            None,
            None,
            f"the tag {tag} is not allowed: a spec holds plain strings, numbers, lists and mappings",
            node.start_mark,
        )


for _tag in ("binary", "set", "omap", "pairs", "timestamp"):
    _SpecLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _SpecLoader.construct_refused)
_SpecLoader.add_constructor("tag:yaml.org,2002:int", _SpecLoader.construct_yaml_int)
_SpecLoader.add_constructor("tag:yaml.org,2002:float", _SpecLoader.construct_yaml_float)
_SpecLoader.add_constructor("tag:yaml.org,2002:str", _SpecLoader.construct_yaml_str)
_SpecLoader.add_constructor(None, _SpecLoader.construct_refused)  # any other tag: !!python/object, !Ref, ...


def _json_key(key: Any) -> Any:
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return key if isinstance(key, str) else str(key)


def _path_at(root: yaml.Node, mark: Any) -> str:
    """The dotted field path of the deepest node of a document that starts at `mark` (where a problem was
    found), '' when it is the document itself or nothing starts there."""
    if mark is None:
        return ""
    best = ""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if node.start_mark.index == mark.index and len(path) > len(best):
            best = path
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "(a complex key)"
                child = f"{path}.{name}" if path else name
                stack += [(key, child), (value, child)]
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
    return best


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases would expand past MAX_NODES values or MAX_DEPTH levels, or refer to
    themselves, measured on the node graph (shared nodes counted once per use, computed once)."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    open_nodes: set[int] = set()

    def visit(node: yaml.Node, level: int) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key], depths[key]
        if key in open_nodes:
            raise ConstructorError(
                None, None, "an alias refers to the value that contains it (endless)", node.start_mark
            )
        if level > MAX_DEPTH:
            raise ConstructorError(None, None, f"nested deeper than {MAX_DEPTH} levels", node.start_mark)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        open_nodes.add(key)
        size, depth = 1, 0
        for child in children:
            child_size, child_depth = visit(child, level + 1)
            size, depth = size + child_size, max(depth, child_depth + 1)
            if size > MAX_NODES or depth > MAX_DEPTH:
                raise ConstructorError(
                    None,
                    None,
                    f"this value expands to more than {MAX_NODES} values or {MAX_DEPTH} levels"
                    " (YAML aliases repeated inside each other): write it out plainly",
                    node.start_mark,
                )
        open_nodes.discard(key)
        sizes[key], depths[key] = size, depth
        return size, depth

    visit(root, 0)


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise SpecFileError(f"{path}: is a directory: give the YAML file(s) inside it")
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise SpecFileError(
            f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB: a spec file is far smaller (the API server refuses"
            " objects over 1.5 MiB); is this the right file?"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecFileError(f"{path}:{line}: not UTF-8 text (byte {exc.start}): save the file as UTF-8") from None


def _yaml_error(path: Path, exc: yaml.YAMLError, root: yaml.Node | None) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    field_path = _path_at(root, getattr(exc, "problem_mark", None)) if root is not None else ""
    if len(field_path) > 100:
        field_path = field_path[:97] + "..."
    if isinstance(exc, ConstructorError):
        return f"{where}: {field_path + ': ' if field_path else ''}{problem}"
    text = f"{where}: not valid YAML: {problem}"
    if context and "while" in context:
        text += f" ({context})"
    if "'\\t'" in problem:  # PyYAML writes a tab as '\t'
        text += "; indent with spaces, not tabs"
    return text


def load_documents(path: Path) -> list[Document]:
    """Every non-empty document of a YAML file, or SpecFileError saying where and why it cannot be read."""
    text = _read_text(path)
    docs: list[Document] = []
    position = 0
    node: yaml.Node | None = None
    loader = None
    try:
        loader = _SpecLoader(text)  # the reader refuses control characters here
        while loader.check_node():
            node = loader.get_node()
            position += 1
            if node is None:
                continue
            _check_expansion(node)
            data = loader.construct_document(node)
            if data is not None:
                docs.append(Document(path, position, data, node))
            node = None
    except ConstructorError as exc:
        raise SpecFileError(_yaml_error(path, exc, node)) from None
    except yaml.reader.ReaderError as exc:  # a control character: no mark, a position in the text
        line = text[: exc.position].count("\n") + 1
        raise SpecFileError(
            f"{path}:{line}: not valid YAML: a control character (U+{_code(exc.character):04X}) is not allowed:"
            " remove it"
        ) from None
    except yaml.YAMLError as exc:
        raise SpecFileError(_yaml_error(path, exc, None)) from None
    except RecursionError:
        raise SpecFileError(f"{path}: nested too deeply to read: a spec is at most {MAX_DEPTH} levels deep") from None
    finally:
        if loader is not None:
            loader.dispose()
    return docs


@dataclass
class Selection:
    """The documents of one file sorted for a command: ours, the others (skipped, with a note), problems.

    `nothing_ours` says why a readable file holds nothing for the command (empty, or only other APIs'
    objects). It is the caller's to weigh, like `kubectl apply -f` over several files: a problem when no
    file of the invocation has anything for the command, a note when another file does (an example's
    pvc.yaml beside its finetunejob.yaml). `all_problems` is the one-file reading."""

    ours: list[Document] = field(default_factory=list)
    skipped: list[Document] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    nothing_ours: str | None = None

    @property
    def all_problems(self) -> list[str]:
        return [*self.problems, *([self.nothing_ours] if self.nothing_ours else [])]


def is_ours(data: Any) -> bool:
    """A document meant for ModelForge: one of our kinds, or any object claiming the modelforge.io group."""
    if not isinstance(data, dict):
        return False
    version, kind = data.get("apiVersion"), data.get("kind")
    return kind in OUR_KINDS or (isinstance(version, str) and version.split("/")[0] == OUR_GROUP)


def select(path: Path, kinds: tuple[str, ...] = OUR_KINDS) -> Selection:
    """Read `path` and sort its documents for a command that handles `kinds`; SpecFileError if unreadable.

    Ours go to validation (which names a missing or foreign apiVersion, or an unknown kind, at its line);
    objects of other APIs are skipped with a note; a document that is not an object is a problem; and a
    file with nothing of `kinds` in it says so in `nothing_ours`, so no command exits 0 having done nothing."""
    documents = load_documents(path)
    selection = Selection()
    for doc in documents:
        if not isinstance(doc.data, dict):
            what = "a list" if isinstance(doc.data, list) else f"the value {str(doc.data)[:40]!r}"
            selection.problems.append(
                f"{doc.where()}: document {doc.index} is {what}, not a Kubernetes object (apiVersion, kind, ...)"
            )
        elif not is_ours(doc.data):
            selection.skipped.append(doc)
            selection.notes.append(f"{doc.where()}: skipped {doc.describe()}: not a ModelForge object")
        elif doc.data.get("kind") in OUR_KINDS and doc.data.get("kind") not in kinds:
            selection.skipped.append(doc)
            selection.notes.append(f"{doc.where()}: skipped {doc.describe()}: this command takes {' or '.join(kinds)}")
        else:
            selection.ours.append(doc)
    if not selection.ours and not selection.problems:
        found = ", ".join(doc.describe() for doc in selection.skipped)
        if not documents:
            selection.nothing_ours = f"{path}: no YAML documents in the file (empty or only comments)"
        else:
            selection.nothing_ours = f"{path}: no {' or '.join(kinds)} in the file (found {found})"
    return selection
