"""Where a multi-file export (YOLO, VOC) goes: a directory or a ``.zip`` archive; and
:func:`save_export`, which puts a delivered export file where a person asked for it."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from types import TracebackType

_STORED_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".zip"}


class ExportSink:
    """Writes files below one root: a directory (images hard-linked when possible) or a zip.

    ``out_path`` ending in ``.zip`` makes a zip (images stored, text deflated); anything else is
    a directory, created if missing. Arc names are POSIX relative paths made by the exporter.
    """

    def __init__(self, out_path: Path | str) -> None:
        self.out_path = Path(out_path)
        self.is_zip = self.out_path.suffix.lower() == ".zip"
        self._zip: zipfile.ZipFile | None = None
        self._made_dirs: set[Path] = set()
        if self.is_zip:
            self.out_path.parent.mkdir(parents=True, exist_ok=True)
            self._zip = zipfile.ZipFile(self.out_path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)
        else:
            self.out_path.mkdir(parents=True, exist_ok=True)

    def _target(self, arcname: str) -> Path:
        rel = PurePosixPath(arcname)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"unsafe export path {arcname!r}")
        target = self.out_path.joinpath(*rel.parts)
        if target.parent not in self._made_dirs:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(target.parent)
        return target

    def write_text(self, arcname: str, text: str) -> None:
        if self._zip is not None:
            self._zip.writestr(arcname, text.encode("utf-8"))
        else:
            self._target(arcname).write_text(text, encoding="utf-8")

    def write_bytes(self, arcname: str, data: bytes) -> None:
        """Write bytes made in memory (a re-encoded image): stored uncompressed in zips."""
        if self._zip is not None:
            compress = zipfile.ZIP_STORED if Path(arcname).suffix.lower() in _STORED_SUFFIXES else zipfile.ZIP_DEFLATED
            self._zip.writestr(arcname, data, compress_type=compress)
        else:
            target = self._target(arcname)
            target.unlink(missing_ok=True)
            target.write_bytes(data)

    def add_file(self, arcname: str, source: Path) -> None:
        """Add an existing file (an image blob): hard link, else copy; stored uncompressed in zips."""
        if self._zip is not None:
            compress = zipfile.ZIP_STORED if Path(arcname).suffix.lower() in _STORED_SUFFIXES else zipfile.ZIP_DEFLATED
            self._zip.write(source, arcname, compress_type=compress)
            return
        target = self._target(arcname)
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self) -> ExportSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
        if exc_type is not None and self.is_zip:
            self.out_path.unlink(missing_ok=True)


def save_export(source: Path, output: Path) -> Path:
    """Copy the export file ``source`` (a .json, or a .zip of a folder export) to ``output``; a
    zip is unpacked into the folder ``output`` unless ``output`` itself ends in ``.zip``.
    Returns ``output`` (absolute)."""
    output = output.resolve()
    if source.suffix.lower() == ".zip" and output.suffix.lower() != ".zip":
        output.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(source) as archive:
            archive.extractall(output)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, output)
    return output


def flat_name(rel_path: str, taken: set[str]) -> str:
    """A unique flat file name for an image: its relative path with ``/`` turned into ``__``.

    Flat because Ultralytics finds labels by replacing the last ``/images/`` of an image path
    with ``/labels/``, which breaks on nested folders themselves called ``images``. The
    ground-truth importer turns ``__`` back into ``/`` to match these names to images.
    Stems are unique too (``a.jpg`` and ``a.png`` would share ``labels/a.txt``); ``taken`` holds
    the stems used so far and is updated.
    """
    parts = [p for p in PurePosixPath(rel_path.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    name = "__".join(parts) or "image"
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        stem, dot, suffix = name, "", ""
    candidate, n = stem, 2
    while candidate in taken:
        candidate = f"{stem}-{n}"
        n += 1
    taken.add(candidate)
    return f"{candidate}{dot}{suffix}"


def stem_of(name: str) -> str:
    """``name`` without its last suffix (``a.b.jpg`` -> ``a.b``)."""
    stem, dot, _suffix = name.rpartition(".")
    return stem if dot and stem else name
