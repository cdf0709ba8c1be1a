"""Blob store: content-addressed keys, atomic writes, and no path from outside ever reaching the filesystem."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from worker.store.blobs import BlobKeyError, LocalBlobStore, file_sha256, is_blob_key


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_put_bytes_is_content_addressed(blobs: LocalBlobStore) -> None:
    data = b"\x89PNG fake heatmap"
    digest = hashlib.sha256(data).hexdigest()
    key = blobs.put_bytes(data, kind="overlays", suffix=".PNG")
    assert key == f"overlays/{digest[:2]}/{digest[2:4]}/{digest}.png"
    assert blobs.put_bytes(data, kind="overlays", suffix=".png") == key
    assert blobs.read_bytes(key) == data
    assert blobs.local_path(key) == blobs.root / key
    assert blobs.put_bytes(b"other", kind="overlays", suffix=".png") != key
    assert oct(blobs.local_path(key).stat().st_mode & 0o777) == oct(0o644)
    assert not [p for p in blobs.local_path(key).parent.iterdir() if p.name.startswith(".tmp-")]


def test_put_many_stores_a_chunk_with_the_keys_put_bytes_gives(blobs: LocalBlobStore, tmp_path: Path) -> None:
    payloads = [os.urandom(520) for _ in range(40)]
    payloads.insert(7, payloads[3])  # the same map twice in one chunk
    old_umask = os.umask(0o077)  # files stay readable by the web and worker whatever the umask
    try:
        keys = blobs.put_many(payloads, kind="maps", suffix=".npy")
    finally:
        os.umask(old_umask)
    alone = LocalBlobStore(tmp_path / "one-at-a-time")
    assert keys == [alone.put_bytes(data, kind="maps", suffix=".npy") for data in payloads]
    assert keys[7] == keys[3] and len(set(keys)) == 40
    assert [blobs.read_bytes(key) for key in keys] == payloads
    assert {oct(blobs.local_path(key).stat().st_mode & 0o777) for key in keys} == {oct(0o644)}
    assert not [p for p in (blobs.root / "maps").rglob(".tmp-*")]
    again = blobs.put_many(payloads[:5] + [b"new"], kind="maps", suffix=".npy")
    assert again[:5] == keys[:5] and blobs.read_bytes(again[5]) == b"new"
    assert blobs.put_many([], kind="maps") == []
    with pytest.raises(BlobKeyError):
        blobs.put_many([b"x"], kind="nope")


def test_put_file_streams_and_matches_put_bytes(blobs: LocalBlobStore, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 << 20))
    key = blobs.put_file(source, kind="images", suffix=".jpg")
    assert key.split("/")[-1] == file_sha256(source) + ".jpg"
    assert blobs.put_bytes(source.read_bytes(), kind="images", suffix=".jpg") == key
    with blobs.open(key) as fh:
        assert fh.read() == source.read_bytes()


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "/etc/passwd",
        "images/../../etc/passwd",
        "images/ab/cd/" + "ab" + "cd" + "0" * 60 + "/../../x",
        "images/ab/cd/abcd" + "0" * 60 + ".jpg\n",
        "images/AB/CD/ABCD" + "0" * 60,
        "secrets/ab/cd/abcd" + "0" * 60,
        "images/00/00/abcd" + "0" * 60,  # directory does not match the digest
        "images/ab/cd/abcd" + "0" * 60 + "/.jpg",
        "images\\ab\\cd\\abcd" + "0" * 60,
        "",
        None,
        42,
    ],
)
def test_bad_keys_are_refused(blobs: LocalBlobStore, key: object) -> None:
    assert not is_blob_key(key)
    for method in (blobs.open, blobs.read_bytes, blobs.exists, blobs.local_path, blobs.delete):
        with pytest.raises(BlobKeyError):
            method(key)  # type: ignore[arg-type]
    if key is None:  # delete_many skips None by contract (optional key columns hold NULL)
        assert blobs.delete_many([key]) == 0
    else:
        with pytest.raises(BlobKeyError):
            blobs.delete_many([key])  # type: ignore[list-item]


@pytest.mark.parametrize("suffix", ["/../x", ".jpg/..", "jpg", ".j p g", ".toolongsuffix", ".a.b.c", "\x00"])
def test_bad_suffixes_are_refused(blobs: LocalBlobStore, suffix: str) -> None:
    with pytest.raises(BlobKeyError):
        blobs.put_bytes(b"x", kind="thumbs", suffix=suffix)
    assert not any(blobs.root.rglob("*"))


def test_unknown_kind_and_bad_digest_are_refused(blobs: LocalBlobStore, tmp_path: Path) -> None:
    with pytest.raises(BlobKeyError, match="unknown blob kind"):
        blobs.put_bytes(b"x", kind="../images")
    source = tmp_path / "f"
    source.write_bytes(b"x")
    with pytest.raises(BlobKeyError, match="bad sha256"):
        blobs.put_file(source, kind="images", sha256="../../" + "0" * 58)


def test_delete_many_counts_removed_files(blobs: LocalBlobStore) -> None:
    keys = [blobs.put_bytes(bytes([i]), kind="maps", suffix=".npy") for i in range(3)]
    assert blobs.delete_many([keys[0], None, keys[1], keys[0]]) == 2
    assert [blobs.exists(k) for k in keys] == [False, False, True]
