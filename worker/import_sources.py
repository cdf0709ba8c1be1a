"""What an import reads: a folder, a .zip of the same layout, optionally a CSV manifest of tags.

Every source yields :class:`Entry` items in a fixed (sorted) order so an interrupted import
resumes at an index. Layout rule: a file at ``<tag>/<anything>/<file>`` gets tag ``<tag>`` (the
first path component); files at the top level get none. With a manifest (CSV with columns
``file_name,tags``, tags separated by ``;``, paths relative to the folder or zip root) only the
listed files are imported, with the manifest's tags; a file listed twice gets the tags of both
rows.

A web upload is a folder of files under safe storage names plus an *upload index*
(:func:`write_upload_index`): for each stored file the user's own relative name (unicode,
spaces and folders kept), the path its image row shows and its tags. Manifests match the
user's names.

Nothing is left out silently: every file not imported is in :attr:`SourceListing.skipped` with
its reason (symbolic links, hidden files, manifest rows naming no file, ...).

Zip files are checked before anything is read: entries with absolute paths, drive letters or
``..`` components are refused, and so are archives with too many entries, an entry or a total
that expands beyond its limit, or entries (or the whole archive) that expand by a ratio only a
zip bomb reaches -- also many mid-size entries, each under a per-entry threshold.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import stat
import unicodedata
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: Refuse archives that expand beyond this many bytes (``CAMLABEL_IMPORT_MAX_BYTES``, default 16 GiB).
DEFAULT_MAX_UNCOMPRESSED = 16 << 30
#: Refuse entries (over :data:`RATIO_MIN_BYTES`) and archives (over :data:`ARCHIVE_RATIO_MIN_BYTES`
#: in all) that expand more than this many times (real JPEG/PNG compress ~1x).
MAX_RATIO = 200
RATIO_MIN_BYTES = 64 << 10
ARCHIVE_RATIO_MIN_BYTES = 16 << 20
#: Refuse archives with more entries than this (``CAMLABEL_IMPORT_MAX_ENTRIES``).
DEFAULT_MAX_ENTRIES = 200_000
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


@dataclass(frozen=True)
class Skipped:
    """A file (or manifest row) the import leaves out, and why."""

    file: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "reason": self.reason}


MISSING_REASON = "listed in the manifest but not found in the upload or folder"


@dataclass
class SourceListing:
    """Entries in import order, files left out with their reasons (``skipped``), and the manifest
    rows that name no file (``missing``, also in ``skipped``)."""

    entries: list[Entry]
    missing: list[str]
    skipped: list[Skipped] = field(default_factory=list)


def _max_total() -> int:
    return int(os.environ.get("CAMLABEL_IMPORT_MAX_BYTES", DEFAULT_MAX_UNCOMPRESSED))


def _max_file() -> int:
    return int(os.environ.get("CAMLABEL_IMPORT_MAX_FILE_BYTES", DEFAULT_MAX_FILE))


def _max_entries() -> int:
    return int(os.environ.get("CAMLABEL_IMPORT_MAX_ENTRIES", DEFAULT_MAX_ENTRIES))


def folder_tag(rel_path: str) -> tuple[str, ...]:
    """``("raccoon",)`` for ``raccoon/images/x.jpg``; ``()`` for a top-level file."""
    parts = PurePosixPath(rel_path).parts
    return (parts[0],) if len(parts) >= 2 else ()


def safe_relative(name: str) -> str:
    """Normalise an archive/manifest path (``/`` separators, Unicode NFC, so a name typed on one
    system matches the same name written by another); ``ImportSourceError`` for absolute paths
    or ``..``."""
    raw = unicodedata.normalize("NFC", name.replace("\\", "/"))
    if raw.startswith("/") or (len(raw) >= 2 and raw[1] == ":") or any(part == ".." for part in raw.split("/")):
        raise ImportSourceError(f"refusing unsafe path {name!r} (absolute paths and '..' are not allowed)")
    normal = posixpath.normpath(raw)
    if normal in (".", ""):
        raise ImportSourceError(f"refusing empty path {name!r}")
    return normal


def _hidden(rel_path: str) -> bool:
    """Hidden files and macOS resource forks are not part of a dataset."""
    parts = PurePosixPath(rel_path).parts
    return any(part.startswith(".") for part in parts) or "__MACOSX" in parts


HIDDEN_REASON = "hidden file or macOS metadata (names starting with '.' or under __MACOSX are not imported)"


def read_manifest(path: Path | str) -> list[tuple[str, tuple[str, ...]]]:
    """``[(rel_path, tags)]`` from a CSV with header ``file_name,tags`` (tags ``;``-separated).

    A file named on several rows appears once, with the tags of all its rows (in order)."""
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
    merged: dict[str, tuple[str, ...]] = {}
    for line, row in enumerate(reader, start=2):
        name = (row.get("file_name") or "").strip()
        if not name:
            raise ImportSourceError(f"manifest {path} line {line}: file_name is empty")
        rel = safe_relative(name)
        tags = tuple(t.strip() for t in (row.get("tags") or "").split(";") if t.strip())
        merged[rel] = tuple(dict.fromkeys(merged.get(rel, ()) + tags))
    return list(merged.items())


@dataclass(frozen=True)
class UploadedFile:
    """One file of a web upload: ``stored`` (its safe name in the upload folder), ``name`` (the
    user's relative name, what manifests match), ``path`` (the image row's ``rel_path``), ``tags``."""

    stored: str
    name: str
    path: str
    tags: tuple[str, ...]


def write_upload_index(path: Path, files: list[UploadedFile]) -> None:
    """Write the upload index (JSON) that :func:`list_source` reads with ``upload_index``."""
    rows = [{"stored": f.stored, "name": f.name, "path": f.path, "tags": list(f.tags)} for f in files]
    path.write_text(json.dumps({"files": rows}, ensure_ascii=False), encoding="utf-8")


def read_upload_index(path: Path | str) -> list[UploadedFile]:
    """The rows :func:`write_upload_index` wrote; ``ImportSourceError`` for a damaged index."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        rows = [UploadedFile(stored=str(r["stored"]), name=safe_relative(str(r["name"])), path=safe_relative(str(r["path"])),
                             tags=tuple(str(t) for t in r.get("tags", ()))) for r in data["files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImportSourceError(f"the upload index {path} cannot be read: {exc}") from exc
    for row in rows:
        if "/" in row.stored or row.stored in ("", ".", ".."):
            raise ImportSourceError(f"the upload index {path} names a stored file outside its folder: {row.stored!r}")
    return rows


def list_source(path: Path | str, manifest: Path | str | None = None, *, upload_index: Path | str | None = None) -> SourceListing:
    """Entries of a folder or .zip at ``path`` (see the module docstring for the rules); with
    ``upload_index``, ``path`` is a web upload's folder of stored files."""
    path = Path(path)
    if not path.exists():
        raise ImportSourceError(f"{path} does not exist")
    skipped: list[Skipped] = []
    if upload_index is not None:
        if not path.is_dir():
            raise ImportSourceError(f"{path} is not an upload folder")
        return _upload_listing(path, read_upload_index(upload_index), manifest)
    if path.is_dir():
        files = _folder_files(path, skipped)
    elif path.is_file() and zipfile.is_zipfile(path):
        files = _zip_files(path, skipped)
    elif path.is_file():
        raise ImportSourceError(f"{path} is neither a folder nor a .zip archive")
    else:
        raise ImportSourceError(f"{path} is not a regular file or folder")
    hidden = {rel for rel in files if _hidden(rel)}
    skipped.extend(Skipped(rel, HIDDEN_REASON) for rel in sorted(hidden))
    if manifest is None:
        entries = [Entry(rel, folder_tag(rel), read) for rel, read in sorted(files.items()) if rel not in hidden]
        return SourceListing(entries=entries, missing=[], skipped=skipped)
    by_name = {unicodedata.normalize("NFC", rel): rel for rel in files}  # names on disk may be NFD (macOS)
    entries, missing = [], []
    for name, tags in read_manifest(manifest):
        rel = by_name.get(name)
        if rel is not None:
            entries.append(Entry(rel, tags, files[rel]))
        else:
            missing.append(name)
    listed = {entry.rel_path for entry in entries}
    skipped = [s for s in skipped if s.file not in listed] + [Skipped(rel, MISSING_REASON) for rel in missing]
    return SourceListing(entries=entries, missing=missing, skipped=skipped)


def _upload_listing(folder: Path, rows: list[UploadedFile], manifest: Path | str | None) -> SourceListing:
    limit = _max_file()
    if manifest is None:
        entries = [Entry(row.path, row.tags, _file_reader(folder / row.stored, limit)) for row in rows]
        return SourceListing(entries=entries, missing=[], skipped=[])
    by_name = {row.name: row for row in rows}
    entries, missing = [], []
    for rel, tags in read_manifest(manifest):
        row = by_name.get(rel)
        if row is None:
            missing.append(rel)
        else:
            entries.append(Entry(row.path, tuple(dict.fromkeys(tags + row.tags)), _file_reader(folder / row.stored, limit)))
    listed = {entry.rel_path for entry in entries}
    skipped = [Skipped(row.path, "uploaded but not listed in the manifest") for row in rows if row.path not in listed]
    skipped += [Skipped(rel, MISSING_REASON) for rel in missing]
    return SourceListing(entries=entries, missing=missing, skipped=skipped)


def _folder_files(root: Path, skipped: list[Skipped]) -> dict[str, Callable[[], bytes]]:
    """Regular files under ``root`` by relative path; symbolic links (never followed) and other
    non-regular files go to ``skipped`` with their reason."""
    limit = _max_file()
    out: dict[str, Callable[[], bytes]] = {}
    for directory, dirs, names in os.walk(root, followlinks=False):
        for name in sorted(dirs):
            full = Path(directory) / name
            if full.is_symlink():
                skipped.append(Skipped(full.relative_to(root).as_posix(), "symbolic link to a folder (links are not followed)"))
        for name in names:
            full = Path(directory) / name
            rel = full.relative_to(root).as_posix()
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                skipped.append(Skipped(rel, "symbolic link (links are not followed)"))
            elif not stat.S_ISREG(mode):
                skipped.append(Skipped(rel, "not a regular file"))
            else:
                out[rel] = _file_reader(full, limit)
    return out


def _file_reader(full: Path, limit: int) -> Callable[[], bytes]:
    def read() -> bytes:
        size = full.stat().st_size
        if size > limit:
            raise ImportSourceError(f"file is {size} bytes, over the {limit}-byte limit")
        return full.read_bytes()

    return read


def _zip_files(path: Path, skipped: list[Skipped]) -> dict[str, Callable[[], bytes]]:
    """Entries of a checked archive (:func:`check_zip_limits`) by path; symbolic-link entries go
    to ``skipped``."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ImportSourceError(f"{path} is not a valid zip archive: {exc}") from exc
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        check_zip_limits(infos, str(path))
    out: dict[str, Callable[[], bytes]] = {}
    for info in infos:
        rel = safe_relative(info.filename)
        if rel in out:
            raise ImportSourceError(f"zip entry {rel!r} appears twice in {path}")
        if stat.S_ISLNK(info.external_attr >> 16):
            skipped.append(Skipped(rel, "symbolic link (links are not followed)"))
            continue
        out[rel] = _zip_reader(path, info.filename, info.file_size)
    return out


def check_zip_limits(infos: list[zipfile.ZipInfo], label: str) -> None:
    """Refuse an archive (``ImportSourceError``) with unsafe entry paths, more than
    ``CAMLABEL_IMPORT_MAX_ENTRIES`` entries, an entry over ``CAMLABEL_IMPORT_MAX_FILE_BYTES`` or a
    total over ``CAMLABEL_IMPORT_MAX_BYTES`` uncompressed, or an entry (over 64 KiB) or the whole
    archive (over 16 MiB) expanding more than :data:`MAX_RATIO` times. Reads only the directory."""
    if len(infos) > _max_entries():
        raise ImportSourceError(f"{label} has {len(infos)} entries, over the {_max_entries()}-entry limit")
    total = compressed = 0
    for info in infos:
        safe_relative(info.filename)
        total += info.file_size
        compressed += info.compress_size
        if info.file_size > _max_file():
            raise ImportSourceError(f"zip entry {info.filename!r} expands to {info.file_size} bytes, over the {_max_file()}-byte limit")
        if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ImportSourceError(
                f"zip entry {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}x "
                f"({info.compress_size} -> {info.file_size} bytes): refusing a likely zip bomb"
            )
    if total > _max_total():
        raise ImportSourceError(f"{label} expands to {total} bytes, over the {_max_total()}-byte limit (zip bomb guard)")
    if total > ARCHIVE_RATIO_MIN_BYTES and total > MAX_RATIO * max(compressed, 1):
        raise ImportSourceError(
            f"{label} expands {total / max(compressed, 1):.0f}x in all ({compressed} -> {total} bytes in {len(infos)} entries): "
            "refusing a likely zip bomb"
        )


def _zip_reader(path: Path, member: str, declared: int) -> Callable[[], bytes]:
    def read() -> bytes:
        with zipfile.ZipFile(path) as archive, archive.open(member) as fh:
            data = fh.read(declared + 1)
        if len(data) > declared:
            raise ImportSourceError(f"zip entry {member!r} is larger than its header says (refusing)")
        return data

    return read
