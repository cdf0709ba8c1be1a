"""What an import refuses or leaves out, and that it says so: decode memory budgets, zip limits
over many mid-size entries, symbolic links, repeated manifest rows, empty files."""

from __future__ import annotations

import os
import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from sqlalchemy import select

from camcore.images import ImageLoadError, load_image
from tests.worker.helpers import jpeg_bytes, run_import
from worker.import_sources import ImportSourceError, list_source
from worker.store.models import Category, Image, ImageTag, JobStatus


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def sixteen_bit_png(side: int) -> bytes:
    """A valid 16-bit greyscale PNG of ``side`` x ``side`` zero pixels, compressed row by row
    (never holding the raw pixels in memory)."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + 2 * side)  # filter byte + 2 bytes a pixel
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def test_16_bit_10000px_png_is_refused_quickly_by_the_decode_budget(sqlite_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = sixteen_bit_png(10_000)
    assert len(data) < 300_000  # ~215 KB on disk, 200 MB of 16-bit pixels
    started = time.monotonic()
    with pytest.raises(ImageLoadError, match="per-image memory budget") as refused:
        load_image(data)
    assert time.monotonic() - started < 1.5  # header only (decoding took 23 s and 3.5 GB)
    assert "10000x10000 in mode I;16" in refused.value.reason
    small = load_image(sixteen_bit_png(300))  # a small 16-bit image still loads
    assert small.mode == "RGB" and small.size == (300, 300)

    folder = tmp_path / "photos" / "owl"
    folder.mkdir(parents=True)
    (folder / "huge.png").write_bytes(data)
    (folder / "fine.jpg").write_bytes(jpeg_bytes((9, 9, 9), (40, 30)))
    started = time.monotonic()
    job = run_import(sqlite_runtime, tmp_path / "photos")
    assert time.monotonic() - started < 20
    assert job.status is JobStatus.succeeded and job.result["imported"] == 1 and job.result["failed"] == 1
    assert job.result["failures"][0]["file"] == "owl/huge.png" and "memory budget" in job.result["failures"][0]["reason"]


@pytest.mark.slow
def test_zip_of_1500_mid_size_entries_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "many.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(1500):
            archive.writestr(f"owl/{i:04d}.jpg", b"\0" * (1 << 20))
    assert bomb.stat().st_size < 2_000_000  # 1500 MiB in 1.7 MB: each entry is under any 1 MiB threshold
    with pytest.raises(ImportSourceError, match="zip bomb"):
        list_source(bomb)


def test_symlinks_are_skipped_and_reported(sqlite_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(jpeg_bytes((1, 2, 3), (40, 30)))
    root = tmp_path / "photos" / "owl"
    root.mkdir(parents=True)
    (root / "real.jpg").write_bytes(jpeg_bytes((4, 5, 6), (40, 30)))
    os.symlink(outside / "secret.jpg", root / "link.jpg")
    os.symlink(outside, root / "linked-folder")
    job = run_import(sqlite_runtime, tmp_path / "photos")
    assert job.status is JobStatus.succeeded and job.result["imported"] == 1
    skipped = {item["file"]: item["reason"] for item in job.result["skipped"]}
    assert skipped == {"owl/link.jpg": "symbolic link (links are not followed)",
                       "owl/linked-folder": "symbolic link to a folder (links are not followed)"}
    assert job.result["summary"].startswith("imported 1 of 3, 2 skipped")


def test_a_file_listed_twice_in_a_manifest_gets_the_tags_of_both_rows(sqlite_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "flat"
    root.mkdir()
    (root / "a.jpg").write_bytes(jpeg_bytes((7, 7, 7), (40, 30)))
    manifest = tmp_path / "m.csv"
    manifest.write_text("file_name,tags\na.jpg,raccoon\na.jpg,animal;raccoon\n")
    job = run_import(sqlite_runtime, root, manifest)
    assert job.status is JobStatus.succeeded and job.result["imported"] == 1
    with sqlite_runtime.sessions() as session:
        tags = set(session.scalars(select(Category.name).join(ImageTag, ImageTag.category_id == Category.id)
                                   .join(Image, Image.id == ImageTag.image_id).where(Image.rel_path == "a.jpg")))
    assert tags == {"raccoon", "animal"}


def test_an_empty_file_says_so(sqlite_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "photos"
    root.mkdir()
    (root / "empty.jpg").write_bytes(b"")
    (root / "ok.jpg").write_bytes(jpeg_bytes((3, 3, 3), (40, 30)))
    job = run_import(sqlite_runtime, root)
    assert job.result["failures"] == [{"file": "empty.jpg", "reason": "empty file (0 bytes)"}]
    with pytest.raises(ImageLoadError, match=r"empty file \(0 bytes\)"):
        load_image(root / "empty.jpg")


def test_manifest_names_match_files_written_in_another_unicode_form(sqlite_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import unicodedata

    root = tmp_path / "flat"
    root.mkdir()
    decomposed = unicodedata.normalize("NFD", "Ünïcode.jpg")  # as macOS writes names
    (root / decomposed).write_bytes(jpeg_bytes((5, 6, 7), (40, 30)))
    manifest = tmp_path / "m.csv"
    manifest.write_text("file_name,tags\n" + unicodedata.normalize("NFC", "Ünïcode.jpg") + ",owl\n", encoding="utf-8")
    job = run_import(sqlite_runtime, root, manifest)
    assert job.status is JobStatus.succeeded and job.result["imported"] == 1 and job.result["missing"] == 0, job.result
