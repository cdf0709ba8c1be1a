"""Blob storage for images, thumbnails, concept maps, descriptor codes, checkpoints and exports.

Keys are content addressed: ``<kind>/<aa>/<bb>/<sha256><suffix>``. Only keys made here
(validated by :data:`_KEY_RE`) ever reach the filesystem, so no user-controlled path does.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeGuard

KINDS = ("images", "thumbs", "maps", "codes", "overlays", "checkpoints", "exports")
_KEY_RE = re.compile(
    r"(?P<kind>[a-z]+)/(?P<a>[0-9a-f]{2})/(?P<b>[0-9a-f]{2})/(?P<sha>[0-9a-f]{64})(?P<suffix>(\.[a-z0-9]{1,8}){0,2})"
)
_SUFFIX_RE = re.compile(r"(\.[a-z0-9]{1,8}){0,2}")
#: Threads :meth:`LocalBlobStore.put_many` writes files on.
PUT_THREADS = 8


class BlobKeyError(ValueError):
    """A key or suffix that this store did not make and will not resolve."""


def is_blob_key(value: object) -> TypeGuard[str]:
    """True when ``value`` has the exact shape of a key this store makes (``kind/aa/bb/<sha256><suffix>``)."""
    if not isinstance(value, str):
        return False
    match = _KEY_RE.fullmatch(value)
    return (
        match is not None
        and match["kind"] in KINDS
        and match["sha"].startswith(match["a"] + match["b"])
    )


def validate_key(value: object) -> str:
    """``value`` itself when it is a well-formed blob key; :class:`BlobKeyError` otherwise."""
    if not is_blob_key(value):
        raise BlobKeyError(f"not a blob key: {value!r}")
    return value


class LocalBlobStore:
    """Blobs in a local directory (default ``$CAMLABEL_DATA_DIR/blobs``); writes are atomic renames."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    # -- writing -------------------------------------------------------------------------
    def put_bytes(self, data: bytes, *, kind: str, suffix: str = "") -> str:
        """Store ``data``; returns its key. Storing the same bytes twice returns the same key."""
        key = self.key_for(hashlib.sha256(data).hexdigest(), kind=kind, suffix=suffix)
        path = self._path(key)
        if not path.exists():
            self._write_new(path, data)
        return key

    def put_many(self, payloads: Sequence[bytes], *, kind: str, suffix: str = "") -> list[str]:
        """Store every payload (all of one ``kind`` and ``suffix``); returns their keys, in order:
        the same keys and files as :meth:`put_bytes` one at a time. The files not stored yet are
        written on up to :data:`PUT_THREADS` threads (a write is a few system calls, which run
        without the GIL)."""
        keys = [self.key_for(hashlib.sha256(data).hexdigest(), kind=kind, suffix=suffix) for data in payloads]
        wanted = {self._path(key): data for key, data in zip(keys, payloads, strict=True)}  # the same content once
        missing = [(path, data) for path, data in wanted.items() if not path.exists()]
        threads = min(PUT_THREADS, len(missing))
        if threads <= 1:
            for path, data in missing:
                self._write_new(path, data)
        else:
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="camlabel-blob-put") as pool:
                for _ in pool.map(lambda item: self._write_new(*item), missing):
                    pass
        return keys

    def put_file(self, source: Path | str, *, kind: str, suffix: str = "", sha256: str | None = None) -> str:
        """Copy a file in, streaming; ``sha256`` may be given when already known."""
        source = Path(source)
        digest = sha256 or file_sha256(source)
        key = self.key_for(digest, kind=kind, suffix=suffix)
        path = self._path(key)
        if not path.exists():
            with source.open("rb") as src:
                self._atomic_write(path, lambda fh: shutil.copyfileobj(src, fh, 1 << 20))
        return key

    @staticmethod
    def key_for(sha256_hex: str, *, kind: str, suffix: str = "") -> str:
        """The key of content with digest ``sha256_hex`` (64 lowercase hex characters)."""
        if kind not in KINDS:
            raise BlobKeyError(f"unknown blob kind {kind!r}; expected one of {KINDS}")
        suffix = suffix.lower()
        if not _SUFFIX_RE.fullmatch(suffix):
            raise BlobKeyError(f"bad blob suffix {suffix!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", sha256_hex):
            raise BlobKeyError(f"bad sha256 {sha256_hex!r}")
        return f"{kind}/{sha256_hex[:2]}/{sha256_hex[2:4]}/{sha256_hex}{suffix}"

    # -- reading -------------------------------------------------------------------------
    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def local_path(self, key: str) -> Path:
        """Filesystem path of a validated key (for ``send_file`` and memory-mapped reads)."""
        return self._path(key)

    # -- deleting ------------------------------------------------------------------------
    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_many(self, keys: Iterable[str | None]) -> int:
        """Delete every key given (``None`` skipped); returns how many files were removed."""
        removed = 0
        for key in keys:
            if key is None:
                continue
            try:
                self._path(key).unlink()
            except FileNotFoundError:
                continue
            removed += 1
        return removed

    # -- internals -----------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    @staticmethod
    def _write_new(path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically (a temporary file in the same directory, then a
        rename), making the directory only when it is missing: the few system calls a small blob needs."""
        tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            try:
                os.fchmod(fd, 0o644)  # whatever the umask: blobs are read by the web and worker alike
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _atomic_write(self, path: Path, write: Callable[[BinaryIO], object]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes 0600; blobs are read by the web and worker alike
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def file_sha256(path: Path | str) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
