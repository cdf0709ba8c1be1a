"""Import jobs: folder layout, zip safety, manifests, bad files, dedup, EXIF sizes, thumbnails."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from tests.worker.helpers import jpeg_bytes, new_collection, run_import
from worker.import_sources import ImportSourceError, list_source
from worker.store.models import Category, Image, ImageStatus, ImageTag, JobStatus


def _images(runtime) -> dict[str, Image]:  # type: ignore[no-untyped-def]
    with runtime.sessions() as session:
        rows = session.scalars(select(Image)).all()
        for row in rows:
            session.expunge(row)
        return {row.rel_path: row for row in rows}


def _tags(runtime) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    with runtime.sessions() as session:
        rows = session.execute(select(Image.rel_path, Category.name).join(ImageTag, ImageTag.image_id == Image.id)
                               .join(Category, Category.id == ImageTag.category_id)).all()
    out: dict[str, set[str]] = {}
    for rel, name in rows:
        out.setdefault(rel, set()).add(name)
    return out


def test_folder_layout_bad_files_and_dedup(runtime, shared_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CAMLABEL_CHUNK_SIZE", "2")
    root = tmp_path / "src"
    (root / "cat" / "deep" / "deeper").mkdir(parents=True)
    (root / "dog").mkdir()
    (root / "cat" / "a.jpg").write_bytes(jpeg_bytes((200, 0, 0)))
    (root / "cat" / "deep" / "deeper" / "b.png").write_bytes(jpeg_bytes((0, 200, 0)))  # a JPEG named .png still loads
    (root / "dog" / "same-as-a.jpg").write_bytes(jpeg_bytes((200, 0, 0)))  # duplicate content
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / "labels.xml").write_text("<xml/>")
    (root / "top.jpg").write_bytes(jpeg_bytes((0, 0, 200)))  # top level: no tag
    whole = jpeg_bytes((9, 99, 199), size=(64, 64))
    (root / "dog" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    shutil.copy(shared_dataset / "kangaroo" / "images" / "00090.jpg", root / "dog" / "00090.jpg")  # the real truncated one
    (root / "dog" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    (root / "dog" / "rotated.jpg").write_bytes(jpeg_bytes((50, 50, 50), size=(40, 20), exif_orientation=6))
    collection_id = new_collection(runtime)

    job = run_import(runtime, root, collection_id=collection_id)
    assert job.status is JobStatus.succeeded, job.error
    assert job.done == job.total == 10
    result = job.result
    assert (result["imported"], result["duplicates"], result["failed"], result["skipped_non_image"]) == (4, 1, 3, 2)
    images = _images(runtime)
    assert set(images) == {"cat/a.jpg", "cat/deep/deeper/b.png", "top.jpg", "dog/cut.jpg", "dog/00090.jpg", "dog/garbage.jpg", "dog/rotated.jpg"}
    failed = {rel: img.failure_reason for rel, img in images.items() if img.status is ImageStatus.failed}
    assert set(failed) == {"dog/cut.jpg", "dog/00090.jpg", "dog/garbage.jpg"}
    assert "truncated" in failed["dog/cut.jpg"].lower() and "truncated" in failed["dog/00090.jpg"].lower()
    assert failed["dog/garbage.jpg"]
    assert {f["file"] for f in result["failures"]} == set(failed)
    assert _tags(runtime) == {"cat/a.jpg": {"cat"}, "cat/deep/deeper/b.png": {"cat"}, "dog/rotated.jpg": {"dog"}}
    rotated = images["dog/rotated.jpg"]
    assert (rotated.width, rotated.height) == (20, 40)  # as displayed, after the EXIF rotation
    blobs = runtime.blobs
    with PILImage.open(blobs.local_path(images["cat/a.jpg"].thumb_key)) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) <= 256
    assert blobs.read_bytes(images["cat/a.jpg"].storage_key) == (root / "cat" / "a.jpg").read_bytes()

    again = run_import(runtime, root, collection_id=collection_id)
    assert again.status is JobStatus.succeeded
    assert again.result["imported"] == 0 and again.result["duplicates"] == 8
    assert len(_images(runtime)) == 7


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def test_zip_in_folder_layout(sqlite_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    archive = _zip(tmp_path / "a.zip", {"owl/x/1.jpg": jpeg_bytes((1, 2, 3)), "fox/2.jpg": jpeg_bytes((4, 5, 6)), "readme.md": b"hi",
                                        "__MACOSX/owl/._1.jpg": b"junk"})
    job = run_import(sqlite_runtime, archive)
    assert job.status is JobStatus.succeeded, job.error
    assert job.result["imported"] == 2 and job.result["skipped_non_image"] == 1
    assert _tags(sqlite_runtime) == {"owl/x/1.jpg": {"owl"}, "fox/2.jpg": {"fox"}}


@pytest.mark.parametrize("bad_name", ["../evil.jpg", "owl/../../evil.jpg", "/etc/evil.jpg", "C:/evil.jpg", "owl\\..\\..\\evil.jpg"])
def test_zip_with_unsafe_paths_is_refused(sqlite_runtime, tmp_path: Path, bad_name: str) -> None:  # type: ignore[no-untyped-def]
    archive = _zip(tmp_path / "bad.zip", {"owl/ok.jpg": jpeg_bytes((1, 2, 3)), bad_name: jpeg_bytes((3, 2, 1))})
    with pytest.raises(ImportSourceError, match="unsafe path"):
        list_source(archive)
    job = run_import(sqlite_runtime, archive)
    assert job.status is JobStatus.failed and "unsafe path" in (job.error or "")
    assert _images(sqlite_runtime) == {}
    assert not (tmp_path / "evil.jpg").exists()


def test_zip_bomb_is_refused(sqlite_runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    bomb = _zip(tmp_path / "bomb.zip", {"owl/zeros.jpg": b"\0" * (40 << 20)})
    assert bomb.stat().st_size < (1 << 20)
    with pytest.raises(ImportSourceError, match="zip bomb"):
        list_source(bomb)
    stored = _zip(tmp_path / "big.zip", {"owl/a.jpg": jpeg_bytes((1, 1, 1)), "owl/b.jpg": jpeg_bytes((2, 2, 2))}, zipfile.ZIP_STORED)
    monkeypatch.setenv("CAMLABEL_IMPORT_MAX_BYTES", "1000")
    job = run_import(sqlite_runtime, stored)
    assert job.status is JobStatus.failed and "over the 1000-byte limit" in (job.error or "")


def test_manifest_tags_and_missing_files(sqlite_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "flat"
    (root / "sub").mkdir(parents=True)
    (root / "1.jpg").write_bytes(jpeg_bytes((10, 0, 0)))
    (root / "sub" / "2.jpg").write_bytes(jpeg_bytes((0, 10, 0)))
    (root / "unlisted.jpg").write_bytes(jpeg_bytes((0, 0, 10)))
    manifest = tmp_path / "tags.csv"
    manifest.write_text("file_name,tags\n1.jpg,raccoon; animal\nsub/2.jpg,kangaroo\nnot-there.jpg,raccoon\n")
    job = run_import(sqlite_runtime, root, manifest)
    assert job.status is JobStatus.succeeded, job.error
    assert job.result["imported"] == 2 and job.result["missing"] == 1 and job.result["missing_files"] == ["not-there.jpg"]
    assert _tags(sqlite_runtime) == {"1.jpg": {"raccoon", "animal"}, "sub/2.jpg": {"kangaroo"}}


@pytest.mark.parametrize(("text", "message"), [
    ("name,labels\n1.jpg,a\n", "needs a header row with columns file_name,tags"),
    ("file_name,tags\n../1.jpg,a\n", "unsafe path"),
    ("file_name,tags\n,a\n", "file_name is empty"),
])
def test_bad_manifests_are_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "1.jpg").write_bytes(jpeg_bytes((1, 1, 1)))
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(ImportSourceError, match=message):
        list_source(tmp_path, manifest)
