"""Media pre-flight (launcher/media.py through check_file): each problem named as file:line."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from modelforge.launcher.dataset import check_file


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _row(text: str, images: list[str] | None = None, **extra: object) -> dict:
    row: dict = {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "red"}]}
    if images is not None:
        row["images"] = images
    row.update(extra)
    return row


def _image(path: Path) -> str:
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    return path.name


def test_good_rows_decode_and_urls_are_noted(tmp_path: Path) -> None:
    red = _image(tmp_path / "red.png")
    data = _write(tmp_path / "d.jsonl", [
        _row("<image>What colour?", [red]),
        _row("No placeholder: ms-swift adds it", [red]),
        _row("<image>remote", ["https://example.invalid/cat.png"]),
        _row("plain text row"),
    ])  # fmt: skip
    report = check_file(data)
    assert report.problems == []
    assert report.usable_rows == 4
    rendered = "\n".join(report.render())
    assert "1 media file(s) found and decoded" in rendered
    assert "1 media URL(s) passed through unchecked" in rendered


def test_missing_image_named_with_file_and_line(tmp_path: Path) -> None:
    red = _image(tmp_path / "red.png")
    data = _write(tmp_path / "d.jsonl", [_row("<image>ok", [red]), _row("<image>gone", ["nope/missing.png"])])
    report = check_file(data)
    assert [line for line, _ in report.problems] == [2]
    rendered = report.render()[0]
    assert rendered.startswith(f"{data}:2: images[0]: 'nope/missing.png'")
    assert "file not found" in rendered and "mediaRoot" in rendered


def test_undecodable_image(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "text.png").write_text("hello")
    data = _write(tmp_path / "d.jsonl", [_row("<image>a", ["broken.jpg"]), _row("<image>b", ["text.png"])])
    report = check_file(data)
    assert [line for line, _ in report.problems] == [1, 2]
    assert all("not a decodable image" in message for _, message in report.problems)
    assert report.render()[1].startswith(f"{data}:2: images[0]: 'text.png'")


def test_placeholder_count_mismatch(tmp_path: Path) -> None:
    red = _image(tmp_path / "red.png")
    data = _write(tmp_path / "d.jsonl", [
        _row("<image><image>two tags, one image", [red]),
        _row("<image>one tag, two images", [red, red]),
        _row("<image>a tag and no images"),
    ])  # fmt: skip
    report = check_file(data)
    assert [line for line, _ in report.problems] == [1, 2, 3]
    first, second, third = (message for _, message in report.problems)
    assert "2 <image> placeholder(s) but 1 images" in first and "extra placeholders" in first
    assert "1 <image> placeholder(s) but 2 images" in second and "in front of the first turn" in second
    assert "1 <image> placeholder(s) but 0 images" in third
    assert report.render()[0].startswith(f"{data}:1: ")


def test_media_root_video_and_audio_headers(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    (root / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(16))
    (root / "voice.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(16))
    (root / "fake.mp4").write_bytes(b"plain text, no container")
    data = _write(tmp_path / "d.jsonl", [
        _row("<video><audio>both", videos=["clip.mp4"], audios=[{"path": "voice.wav"}]),
        _row("<video>bad", videos=["fake.mp4"]),
        _row("<image>wrong type", [42]),
    ])  # fmt: skip
    assert check_file(data).problems[0][0] == 1  # relative to the file's folder: not found there
    report = check_file(data, media_root=root)
    assert [line for line, _ in report.problems] == [2, 3]
    assert "not a known video container" in report.problems[0][1]
    assert "must be a path or URL string" in report.problems[1][1]


def test_a_decompression_bomb_and_an_unreadable_name_are_rows_not_crashes(tmp_path: Path, monkeypatch) -> None:
    bomb = _image(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16)  # 8x8 = 64 pixels: over twice the limit, Pillow refuses
    long_name = "x" * 300 + ".png"  # longer than a file name may be (ENAMETOOLONG)
    data = _write(tmp_path / "d.jsonl", [_row("<image>a", [bomb]), _row("<image>b", [long_name])])
    report = check_file(data)
    assert [line for line, _ in report.problems] == [1, 2]
    assert "too many pixels to decode safely" in report.problems[0][1]
    assert "cannot read it" in report.problems[1][1]
