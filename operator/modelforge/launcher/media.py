"""Media pre-flight: the images, videos and audios a multimodal dataset row names, checked before a GPU.

ms-swift's multimodal rows are the text layouts plus `images` / `videos` / `audios` lists (a string or a
list of strings, or of {"path": ...} objects), with `<image>` / `<video>` / `<audio>` placeholders in the
turns. ms-swift opens local paths relative to ROOT_IMAGE_DIR (which the launcher sets to the media root,
or to the dataset file's folder) and only when a batch reaches them, so a missing or broken file fails
hours into training. Here every local file must exist and decode (Pillow for images; a known container
header for video and audio), and the placeholders must match the lists. URLs are passed through, noted.

ms-swift's own rule (swift/template/base.py, _add_default_tags): with no placeholder at all it puts one
per medium in front of the first turn; with fewer it prepends the missing ones (rarely what was meant);
with more it leaves the extra placeholders in the text. The last two are problems here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MEDIA_KEYS = {"image": "images", "video": "videos", "audio": "audios"}
PASSED_THROUGH = ("http://", "https://", "data:")

# Container signatures: (offset, bytes) any of which identifies a file ffmpeg/decord/librosa can open.
_VIDEO_HEADERS = (
    (4, b"ftyp"),
    (0, b"\x1a\x45\xdf\xa3"),
    (0, b"RIFF"),
    (0, b"OggS"),
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),
)
_AUDIO_HEADERS = (
    (0, b"RIFF"),
    (0, b"ID3"),
    (0, b"fLaC"),
    (0, b"OggS"),
    (4, b"ftyp"),
    (0, b"\xff\xf1"),
    (0, b"\xff\xf9"),
)


@dataclass
class MediaChecker:
    """Checks the media of the rows of one dataset file; remembers URLs seen and files already decoded."""

    base_dir: Path
    media_root: Path | None = None
    urls: int = 0
    files: int = 0  # distinct local files that decoded
    _decoded: dict[Path, str | None] = field(default_factory=dict)

    def row(self, row: dict[str, Any]) -> list[str]:
        """Problems with one row's media (empty when it has none or all is well)."""
        present = [kind for kind, key in MEDIA_KEYS.items() if key in row]
        text = "\n".join(_strings(row, skip=set(MEDIA_KEYS.values())))
        problems: list[str] = []
        for kind, key in MEDIA_KEYS.items():
            tags = len(re.findall(f"<{kind}>", text))
            items = _items(row.get(key)) if kind in present else []
            if isinstance(items, str):
                problems.append(f"{key}: {items}")
                continue
            if tags > len(items):
                problems.append(
                    f"{tags} <{kind}> placeholder(s) but {len(items)} {key}: ms-swift would leave the extra "
                    f"placeholders in the text; add the missing {key} or remove placeholders"
                )
            elif 0 < tags < len(items):
                problems.append(
                    f"{tags} <{kind}> placeholder(s) but {len(items)} {key}: ms-swift would put the missing "
                    f"{len(items) - tags} in front of the first turn; put one <{kind}> where each belongs"
                )
            for index, item in enumerate(items):
                problem = self._item(kind, item)
                if problem:
                    problems.append(f"{key}[{index}]: {problem}")
        return problems

    def _item(self, kind: str, item: str) -> str | None:
        if item.startswith(PASSED_THROUGH):
            self.urls += 1
            return None
        path = Path(item).expanduser()
        if not path.is_absolute():
            path = (self.media_root or self.base_dir) / path
        if path not in self._decoded:
            self._decoded[path] = _decode(kind, path)
            self.files += self._decoded[path] is None
        problem = self._decoded[path]
        return f"{item!r} ({path}): {problem}" if problem else None

    def notes(self) -> list[str]:
        """What was checked, and what could not be (URLs are fetched by ms-swift at training time)."""
        lines = []
        if self.files:
            lines.append(f"{self.files} media file(s) found and decoded")
        if self.urls:
            lines.append(f"{self.urls} media URL(s) passed through unchecked: ms-swift fetches them during training")
        return lines


def _strings(value: Any, skip: set[str]) -> list[str]:
    """Every string in a row outside the media lists (turn contents, query, system...)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() if k not in skip for s in _strings(v, skip)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v, skip)]
    return []


def _items(value: Any) -> list[str] | str:
    """A media column as a list of paths/URLs, or a message saying why it is not one."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    items = []
    for entry in values:
        if isinstance(entry, dict):
            entry = entry.get("path") or entry.get("url") or entry.get("image")
        if not isinstance(entry, str) or not entry:
            return f"each entry must be a path or URL string (or {{'path': ...}}), got {type(entry).__name__}"
        items.append(entry)
    return items


def _decode(kind: str, path: Path) -> str | None:
    try:
        return _check(kind, path)
    except OSError as exc:  # a name too long, no permission, an I/O error: said at the row, never a crash
        return f"cannot read it ({exc.strerror or exc.__class__.__name__})"


def _check(kind: str, path: Path) -> str | None:
    if not path.exists():
        return (
            "file not found; relative paths resolve against spec.multimodal.mediaRoot (--media-root), "
            "else the dataset file's folder"
        )
    if not path.is_file():
        return "not a file"
    if kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image.load()
        except Image.DecompressionBombError as exc:
            return f"too many pixels to decode safely ({str(exc)[:120]}); resize it"
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            return f"not a decodable image ({exc.__class__.__name__}: {str(exc)[:120]})"
        return None
    with path.open("rb") as handle:
        head = handle.read(16)
    headers = _VIDEO_HEADERS if kind == "video" else _AUDIO_HEADERS
    if not any(head[offset : offset + len(magic)] == magic for offset, magic in headers):
        return f"not a known {kind} container (mp4/mov/mkv/webm/avi/ogg/wav/mp3/flac); re-encode it"
    return None


def media_root_for(media_root: str | None, datasets: list[str]) -> Path | None:
    """What relative media paths resolve against: the media root, else the first dataset file's folder."""
    if media_root:
        return Path(media_root).expanduser().resolve()
    local = [Path(d).expanduser() for d in datasets if Path(d).expanduser().is_file()]
    return local[0].resolve().parent if local else None


def media_env(root: Path | None) -> dict[str, str]:
    """ms-swift's ROOT_IMAGE_DIR, so training opens the same files pre-flight decoded."""
    return {"ROOT_IMAGE_DIR": str(root)} if root else {}
