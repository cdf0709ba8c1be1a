"""Exports: the parameters people may choose, and an export written at once for a download.

Both the export job and :func:`write_export` call :func:`worker.formats.export_file`, so a
download, a dashboard export and ``camlabel export`` give the same file.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from web.services.collections import get_collection
from web.services.errors import Invalid
from web.services.jobs import job_params_from
from worker.formats import ExportFile, FormatError, export_file
from worker.store.blobs import LocalBlobStore
from worker.store.models import JobKind


def export_params(data: Mapping[str, Any]) -> dict[str, Any]:
    """Export parameters from a query string, form or JSON object, checked as an export job's
    (:class:`worker.jobs.params.ExportParams`); ``Invalid`` naming the field."""
    return job_params_from(JobKind.export, data)


def write_export(session: Session, blobs: LocalBlobStore, data_dir: Path, collection_id: int, params: Mapping[str, Any]) -> ExportFile:
    """Write an export now, as the export job does, into a fresh folder under ``data_dir``
    (``export.path.parent``; the caller deletes it once the file is delivered)."""
    get_collection(session, collection_id)
    workdir = Path(tempfile.mkdtemp(prefix="export-", dir=data_dir))
    try:
        return export_file(session, blobs, collection_id, params, workdir)
    except FormatError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise Invalid("bad_export", str(exc)) from exc
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
