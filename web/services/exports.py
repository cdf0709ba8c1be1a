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
from worker.formats import BOX_STATUSES, EXPORT_FORMATS, SPLIT_FORMATS, ExportFile, FormatError, export_file
from worker.store.blobs import LocalBlobStore

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
    raise Invalid("bad_value", f"{name} must be true or false, not {value!r}", field=name)


def export_params(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validated export parameters from a query string, form or JSON object.

    ``format`` (default ``coco``), ``status`` (``accepted`` default | ``all``),
    ``include_unreviewed`` (default false: reviewed images only), and for yolo/voc
    ``val_fraction`` (0 <= f < 1, default 0: no split) with ``seed`` (default 0).
    Any bad value is ``Invalid`` naming the field."""
    fmt = str(data.get("format") or "coco")
    status = str(data.get("status") or "accepted")
    if fmt not in EXPORT_FORMATS:
        raise Invalid("bad_format", f"format must be one of {EXPORT_FORMATS}", field="format")
    if status not in BOX_STATUSES:
        raise Invalid("bad_status", f"status must be one of {BOX_STATUSES}", field="status")
    params: dict[str, Any] = {"format": fmt, "status": status, "include_unreviewed": _flag(data.get("include_unreviewed"), "include_unreviewed")}
    raw_fraction = data.get("val_fraction")
    if raw_fraction not in (None, ""):
        try:
            fraction = float(raw_fraction)
        except (TypeError, ValueError) as exc:
            raise Invalid("bad_value", f"val_fraction must be a number in [0, 1), not {raw_fraction!r}", field="val_fraction") from exc
        if not 0 <= fraction < 1:
            raise Invalid("bad_value", f"val_fraction must be in [0, 1), not {raw_fraction!r}", field="val_fraction")
        if fraction and fmt not in SPLIT_FORMATS:
            raise Invalid("bad_value", "val_fraction (a train/val split) is for yolo and voc exports", field="val_fraction")
        params["val_fraction"] = fraction
    raw_seed = data.get("seed")
    if raw_seed not in (None, ""):
        try:
            seed = int(str(raw_seed))
        except ValueError as exc:
            raise Invalid("bad_value", f"seed must be an integer, not {raw_seed!r}", field="seed") from exc
        if not 0 <= seed <= MAX_SEED:
            raise Invalid("bad_value", f"seed must be between 0 and {MAX_SEED}", field="seed")
        params["seed"] = seed
    return params


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
