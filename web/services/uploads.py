"""Uploads: files saved into a staging folder, then an import job that reads them.

The upload side needs only a file's ``filename`` and ``save(path)`` (:class:`UploadedFileLike`,
which werkzeug's ``FileStorage`` is), so nothing here depends on a request.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy.orm import Session
from werkzeug.utils import secure_filename

from web.services.collections import get_collection
from web.services.errors import Invalid, Unavailable
from web.services.jobs import submit_job
from worker.import_sources import ImportSourceError, UploadedFile, check_zip_limits, safe_relative, write_upload_index
from worker.staging import new_staging_folder, remove_staging, sweep_staging
from worker.store.models import Job

_TAG_RE = re.compile(r"^[\w][\w .\-]{0,99}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_CHARS = 1000


class UploadedFileLike(Protocol):
    """A file sent by a user: its name as sent (may be empty) and a way to save its bytes."""

    filename: str | None

    def save(self, dst: str | Path) -> None: ...


@dataclass
class StagedUpload:
    """Files saved under ``data_dir/staging/<uuid>/`` (``folder``) ready for an import job."""

    folder: Path  # the upload's staging folder, deleted when its import job ends
    path: Path  # a folder of stored files (multi-file upload) or the saved .zip, inside ``folder``
    manifest: Path | None
    n_files: int
    index: Path | None = None  # loose files: the upload index (the user's names of the stored files)


def stage_upload(data_dir: Path, files: Iterable[UploadedFileLike], *, tag: str | None, manifest: UploadedFileLike | None) -> StagedUpload:
    """Save an upload (loose images, or one .zip) with an optional ``tag`` and CSV ``manifest``
    into a fresh staging folder; ``Invalid`` (and nothing kept) for a bad upload."""
    uploads = [f for f in files if f is not None and f.filename]
    if not uploads:
        raise Invalid("no_files", "choose at least one image or a .zip to upload")
    if tag:
        tag = tag.strip()
        if not _TAG_RE.match(tag):
            raise Invalid("bad_tag", "a tag has 1 to 100 letters, digits, spaces, '.', '_' or '-'")
    staging = new_staging_folder(data_dir)
    try:
        return _save_upload(staging, uploads, tag=tag, manifest=manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def upload_name(filename: str) -> str:
    """The user's relative name of an uploaded file: ``imgs/m0.jpg`` kept as sent (backslashes as
    ``/``); a Windows or absolute path is reduced to its last part. ``Invalid`` for ``..``,
    control characters or an over-long name."""
    raw = unicodedata.normalize("NFC", filename.replace("\\", "/"))
    if _CONTROL_RE.search(raw) or len(raw) > MAX_NAME_CHARS:
        raise Invalid("bad_file_name", f"file name {filename[:100]!r} has control characters or is over {MAX_NAME_CHARS} characters")
    if raw.startswith("/") or (len(raw) >= 2 and raw[1] == ":"):
        raw = raw.rsplit("/", 1)[-1]
    try:
        return safe_relative(raw)
    except ImportSourceError as exc:
        raise Invalid("bad_file_name", f"files: {exc}") from exc


def _save_upload(staging: Path, uploads: list[UploadedFileLike], *, tag: str | None, manifest: UploadedFileLike | None) -> StagedUpload:
    manifest_path: Path | None = None
    if manifest is not None and manifest.filename:
        manifest_path = staging / "manifest.csv"
        manifest.save(manifest_path)
    zips = [f for f in uploads if str(f.filename).lower().endswith(".zip")]
    if zips:
        if len(uploads) != 1:
            raise Invalid("mixed_upload", "upload either one .zip or loose image files, not both")
        target = staging / "upload.zip"
        zips[0].save(target)
        _check_zip(target)
        return StagedUpload(folder=staging, path=target, manifest=manifest_path, n_files=1)
    root = staging / "files"
    root.mkdir()
    rows: list[UploadedFile] = []
    seen: set[str] = set()
    for index, upload in enumerate(uploads, start=1):
        name = upload_name(str(upload.filename))
        if name in seen:
            raise Invalid("duplicate_file_name", f"two uploaded files are both named {name!r}")
        seen.add(name)
        suffix = Path(secure_filename(Path(name).name)).suffix.lower()
        stored = f"{index:06d}{suffix}"
        upload.save(root / stored)
        tags = (tag,) if tag else ()
        rows.append(UploadedFile(stored=stored, name=name, path=f"{tag}/{name}" if tag and manifest_path is None else name, tags=tags))
    index_path = staging / "upload.json"
    write_upload_index(index_path, rows)
    return StagedUpload(folder=staging, path=root, manifest=manifest_path, n_files=len(uploads), index=index_path)


def _check_zip(path: Path) -> None:
    """Refuse at once (``Invalid``) a file that is no zip, has absolute / ``..`` entries or breaks
    the zip limits (:func:`worker.import_sources.check_zip_limits`); the importer checks again,
    this only makes the error immediate (:func:`stage_upload` removes the folder)."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_zip_limits([info for info in archive.infolist() if not info.is_dir()], "the upload")
    except (zipfile.BadZipFile, ImportSourceError) as exc:
        message = str(exc) if isinstance(exc, ImportSourceError) else "the uploaded .zip is not a valid zip archive"
        raise Invalid("bad_zip", message.replace(str(path), "the upload")) from exc


def import_upload(session: Session, data_dir: Path, collection_id: int, files: Iterable[UploadedFileLike], *, tag: str | None,
                  manifest: UploadedFileLike | None, user_id: int | None) -> tuple[Job, int]:
    """Stage an upload (see :func:`stage_upload`) and start its import job: ``(job, files staged)``.

    The job deletes the staging folder when it ends (``staging`` param); a folder whose job
    could not be recorded is deleted here, and older leftovers by :func:`sweep_staging`."""
    get_collection(session, collection_id)
    sweep_staging(session, data_dir)
    staged = stage_upload(data_dir, files, tag=tag, manifest=manifest)
    params = {"path": str(staged.path), "staging": str(staged.folder)}
    if staged.manifest is not None:
        params["manifest"] = str(staged.manifest)
    if staged.index is not None:
        params["upload_index"] = str(staged.index)
    try:
        job = submit_job(session, kind="import", collection_id=collection_id, params=params, user_id=user_id)
    except Unavailable:  # the job is recorded (the watchdog sends it again) and will read the files
        raise
    except Exception:  # refused, database down, disk full: no job will read the files
        session.rollback()
        remove_staging(data_dir, staged.folder)
        raise
    return job, staged.n_files
