"""Export requests: validated parameters (shared by the download, the export job and the
dashboard forms) and the file responses, named ``<collection>-<format>-<YYYYMMDD>.<ext>``."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Response, after_this_request, send_file

from web.errors import ApiError

EXPORT_FORMATS = ("coco", "coco-results", "yolo", "voc")
EXPORT_STATUSES = ("accepted", "all")
_TRUE = ("1", "true", "on", "yes")
_FALSE = ("", "0", "false", "off", "no")
MAX_SEED = 2**31 - 1


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ApiError(400, "bad_value", f"{name} must be true or false, not {value!r}", field=name)


def export_params(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validated export parameters from a query string, form or JSON object.

    ``format`` (default ``coco``), ``status`` (``accepted`` default | ``all``),
    ``include_unreviewed`` (default false: reviewed images only), and for yolo/voc
    ``val_fraction`` (0 <= f < 1, default 0: no split) with ``seed`` (default 0).
    Any bad value is a 400 naming the field."""
    fmt = str(data.get("format") or "coco")
    status = str(data.get("status") or "accepted")
    if fmt not in EXPORT_FORMATS:
        raise ApiError(400, "bad_format", f"format must be one of {EXPORT_FORMATS}", field="format")
    if status not in EXPORT_STATUSES:
        raise ApiError(400, "bad_status", f"status must be one of {EXPORT_STATUSES}", field="status")
    params: dict[str, Any] = {"format": fmt, "status": status, "include_unreviewed": _flag(data.get("include_unreviewed"), "include_unreviewed")}
    raw_fraction = data.get("val_fraction")
    if raw_fraction not in (None, ""):
        try:
            fraction = float(raw_fraction)
        except (TypeError, ValueError) as exc:
            raise ApiError(400, "bad_value", f"val_fraction must be a number in [0, 1), not {raw_fraction!r}", field="val_fraction") from exc
        if not 0 <= fraction < 1:
            raise ApiError(400, "bad_value", f"val_fraction must be in [0, 1), not {raw_fraction!r}", field="val_fraction")
        if fraction and fmt not in ("yolo", "voc"):
            raise ApiError(400, "bad_value", "val_fraction (a train/val split) is for yolo and voc exports", field="val_fraction")
        params["val_fraction"] = fraction
    raw_seed = data.get("seed")
    if raw_seed not in (None, ""):
        try:
            seed = int(str(raw_seed))
        except ValueError as exc:
            raise ApiError(400, "bad_value", f"seed must be an integer, not {raw_seed!r}", field="seed") from exc
        if not 0 <= seed <= MAX_SEED:
            raise ApiError(400, "bad_value", f"seed must be between 0 and {MAX_SEED}", field="seed")
        params["seed"] = seed
    return params


def export_download(session: Any, blobs: Any, data_dir: Path, collection_id: int, collection_name: str, params: Mapping[str, Any]) -> Response:
    """Run an export in a scratch folder and send it as an attachment (deleted once sent)."""
    from worker.formats import download_name, export_collection

    fmt = params["format"]
    kwargs = {k: v for k, v in params.items() if k != "format"}
    workdir = Path(tempfile.mkdtemp(prefix="export-", dir=data_dir))
    try:
        single_file = fmt in ("coco", "coco-results")
        out = workdir / ("export.json" if single_file else "export.zip")
        export_collection(session, blobs, collection_id, fmt, out, **kwargs)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise

    @after_this_request
    def _cleanup(response: Response) -> Response:
        response.call_on_close(lambda: shutil.rmtree(workdir, ignore_errors=True))
        return response

    return send_file(out, mimetype="application/json" if single_file else "application/zip", as_attachment=True,
                     download_name=download_name(collection_name, fmt))


def job_download(blobs: Any, result: Mapping[str, Any]) -> Response:
    """An export job's file under the name in its result (404 when there is none)."""
    key = result.get("export_key") if isinstance(result, Mapping) else None
    if not key or not blobs.exists(key):
        raise ApiError(404, "not_found", "this job has no export file")
    name = str(result.get("filename") or Path(key).name)
    mimetype = "application/zip" if name.endswith(".zip") else "application/json"
    return send_file(blobs.local_path(key), mimetype=mimetype, as_attachment=True, download_name=name)
