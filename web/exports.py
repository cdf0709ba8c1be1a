"""Export files as HTTP downloads, named ``<collection>-<format>-<YYYYMMDD>.<ext>``: one written
for this request (:func:`send_export`) or an export job's stored file (:func:`job_download`)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Response, after_this_request, send_file

from web.services.errors import NotFound
from worker.formats import FORMATS, ExportFile
from worker.store.blobs import LocalBlobStore


def send_export(export: ExportFile) -> Response:
    """Send an export written for this request as an attachment; its folder is deleted once sent."""
    workdir = export.path.parent

    @after_this_request
    def _cleanup(response: Response) -> Response:
        response.call_on_close(lambda: shutil.rmtree(workdir, ignore_errors=True))
        return response

    return send_file(export.path, mimetype=export.format.mimetype, as_attachment=True, download_name=export.filename)


def job_download(blobs: LocalBlobStore, result: Mapping[str, Any]) -> Response:
    """An export job's file under the name in its result (``NotFound`` when there is none)."""
    key = result.get("export_key") if isinstance(result, Mapping) else None
    if not key or not blobs.exists(key):
        raise NotFound("not_found", "this job has no export file")
    name = str(result.get("filename") or Path(key).name)
    mimetype = next((f.mimetype for f in FORMATS.values() if name.endswith(f.suffix)), "application/octet-stream")
    return send_file(blobs.local_path(key), mimetype=mimetype, as_attachment=True, download_name=name)
