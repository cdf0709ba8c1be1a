"""What an import reads: a folder, a .zip of the same layout, optionally a CSV manifest of tags.

Every source yields :class:`Entry` items in a fixed (sorted) order so an interrupted import
resumes at an index. Layout rule: a file at ``<tag>/<anything>/<file>`` gets tag ``<tag>`` (the
first path component); files at the top level get none. With a manifest (CSV with columns
``file_name,tags``, tags separated by ``;``, paths relative to the folder or zip root) only the
listed files are imported, with the manifest's tags.

Zip files are checked before anything is read: entries with absolute paths, drive letters or
``..`` components are refused, and so are archives whose uncompressed size or compression
ratio looks like a zip bomb.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: Refuse archives that expand beyond this many bytes (``CAMLABEL_IMPORT_MAX_BYTES``, default 16 GiB).
DEFAULT_MAX_UNCOMPRESSED = 16 << 30
#: Refuse entries that expand more than this many times (real JPEG/PNG compress ~1x).
MAX_RATIO = 200
#: Largest single file accepted (``CAMLABEL_IMPORT_MAX_FILE_BYTES``, default 512 MiB).
DEFAULT_MAX_FILE = 512 << 20


class ImportSourceError(ValueError):
    """The path, archive or manifest cannot be imported; the message says why."""


@dataclass(frozen=True)
class Entry:
    """One file to import: ``rel_path`` (posix, relative to the root), its tags, how to read it."""

    rel_path: str
    tags: tuple[str, ...]
    read: Callable[[], bytes] = field(compare=False, repr=False)

    @property
    def is_image(self) -> bool:
        return PurePosixPath(self.rel_path).suffix.lower() in IMAGE_SUFFIXES


@dataclass
class SourceListing:
    """Entries in import order plus manifest rows that name no file (``missing``)."""

    entries: list[Entry]
    missing: list[str]


def _max_total() -> int:
    return int(os.environ.get("CAMLABEL_IMPORT_MAX_BYTES", DEFAULT_MAX_UNCOMPRESSED))


def _max_file() -> int:
    return int(os.environ.get("CAMLABEL_IMPORT_MAX_FILE_BYTES", DEFAULT_MAX_FILE))


def folder_tag(rel_path: str) -> tuple[str, ...]:
    """``("raccoon",)`` for ``raccoon/images/x.jpg``; ``()`` for a top-level file."""
    parts = PurePosixPath(rel_path).parts
    return (parts[0],) if len(parts) >= 2 else ()


def safe_relative(name: str) -> str:
    """Normalise an archive/manifest path; ``ImportSourceError`` for absolute paths or ``..``."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) >= 2 and raw[1] == ":") or any(part == ".." for part in raw.split("/")):
        raise ImportSourceError(f"refusing unsafe path {name!r} (absolute paths and '..' are not allowed)")
    normal = posixpath.normpath(raw)
    if normal in (".", ""):
        raise ImportSourceError(f"refusing empty path {name!r}")
    return normal


def _skip(rel_path: str) -> bool:
    """Hidden files and macOS resource forks are not part of a dataset."""
    parts = PurePosixPath(rel_path).parts
    return any(part.startswith(".") for part in parts) or "__MACOSX" in parts


def read_manifest(path: Path | str) -> list[tuple[str, tuple[str, ...]]]:
    """``[(rel_path, tags)]`` from a CSV with header ``file_name,tags`` (tags ``;``-separated)."""
    path = Path(path)
    if not path.is_file():
        raise ImportSourceError(f"manifest {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportSourceError(f"manifest {path} is not UTF-8 text: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "file_name" not in reader.fieldnames or "tags" not in reader.fieldnames:
        raise ImportSourceError(f"manifest {path} needs a header row with columns file_name,tags (got {reader.fieldnames})")
    rows: list[tuple[str, tuple[str, ...]]] = []
    for line, row in enumerate(reader, start=2):
        name = (row.get("file_name") or "").strip()
        if not name:
            raise ImportSourceError(f"manifest {path} line {line}: file_name is empty")
        rel = safe_relative(name)
        tags = tuple(dict.fromkeys(t.strip() for t in (row.get("tags") or "").split(";") if t.strip()))
        rows.append((rel, tags))
    return rows


def list_source(path: Path | str, manifest: Path | str | None = None) -> SourceListing:
    """Entries of a folder or .zip at ``path`` (see the module docstring for the rules)."""
    path = Path(path)
    if not path.exists():
        raise ImportSourceError(f"{path} does not exist")
    if path.is_dir():
        files = _folder_files(path)
    elif path.is_file() and zipfile.is_zipfile(path):
        files = _zip_files(path)
    elif path.is_file():
        raise ImportSourceError(f"{path} is neither a folder nor a .zip archive")
    else:
        raise ImportSourceError(f"{path} is not a regular file or folder")
    if manifest is None:
        entries = [Entry(rel, folder_tag(rel), read) for rel, read in sorted(files.items()) if not _skip(rel)]
        return SourceListing(entries=entries, missing=[])
    entries, missing = [], []
    for rel, tags in read_manifest(manifest):
        if rel in files:
            entries.append(Entry(rel, tags, files[rel]))
        else:
            missing.append(rel)
    return SourceListing(entries=entries, missing=missing)


def _folder_files(root: Path) -> dict[str, Callable[[], bytes]]:
    limit = _max_file()
    out: dict[str, Callable[[], bytes]] = {}
    for directory, _dirs, names in os.walk(root, followlinks=False):
        for name in names:
            full = Path(directory) / name
            if full.is_symlink() or not full.is_file():
                continue
            rel = full.relative_to(root).as_posix()
            out[rel] = _file_reader(full, limit)
    return out


def _file_reader(full: Path, limit: int) -> Callable[[], bytes]:
    def read() -> bytes:
        size = full.stat().st_size
        if size > limit:
            raise ImportSourceError(f"file is {size} bytes, over the {limit}-byte limit")
        return full.read_bytes()

    return read


def _zip_files(path: Path) -> dict[str, Callable[[], bytes]]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ImportSourceError(f"{path} is not a valid zip archive: {exc}") from exc
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        total = 0
        for info in infos:
            safe_relative(info.filename)
            total += info.file_size
            if info.file_size > _max_file():
                raise ImportSourceError(f"zip entry {info.filename!r} expands to {info.file_size} bytes, over the {_max_file()}-byte limit")
            if info.compress_size and info.file_size > (1 << 20) and info.file_size / info.compress_size > MAX_RATIO:
                raise ImportSourceError(
                    f"zip entry {info.filename!r} expands {info.file_size / info.compress_size:.0f}x "
                    f"({info.compress_size} -> {info.file_size} bytes): refusing a likely zip bomb"
                )
        if total > _max_total():
            raise ImportSourceError(f"{path} expands to {total} bytes, over the {_max_total()}-byte limit (zip bomb guard)")
    out: dict[str, Callable[[], bytes]] = {}
    for info in infos:
        rel = safe_relative(info.filename)
        if rel in out:
            raise ImportSourceError(f"zip entry {rel!r} appears twice in {path}")
        out[rel] = _zip_reader(path, info.filename, info.file_size)
    return out


def _zip_reader(path: Path, member: str, declared: int) -> Callable[[], bytes]:
    def read() -> bytes:
        with zipfile.ZipFile(path) as archive, archive.open(member) as fh:
            data = fh.read(declared + 1)
        if len(data) > declared:
            raise ImportSourceError(f"zip entry {member!r} is larger than its header says (refusing)")
        return data

    return read
