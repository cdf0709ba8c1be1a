"""``export_collection``: one entry point for every export format."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.formats.coco import write_coco, write_coco_results
from worker.formats.perimage import write_voc, write_yolo
from worker.formats.selection import BOX_STATUSES, IMAGE_OK, FormatError, box_filter, category_map, load_collection
from worker.formats.sink import ExportSink
from worker.store.blobs import LocalBlobStore
from worker.store.models import Box, Job, JobKind, ModelVersion
from worker.store.models import Image as ImageRow

EXPORT_FORMATS = ("coco", "coco-results", "yolo", "voc")
SOURCES = ("predictions", "ground_truth")


def _selection(status: str, source: str) -> str:
    if source not in SOURCES:
        raise FormatError(f"unknown box source {source!r}; expected one of {SOURCES}")
    if source == "ground_truth":
        return "ground_truth"
    if status not in BOX_STATUSES:
        raise FormatError(f"unknown box status {status!r}; expected one of {BOX_STATUSES}")
    return status


def model_versions_info(session: Session, collection_id: int, selection: str, model_version_id: int | None = None) -> list[dict[str, Any]]:
    """The model versions behind the selected boxes, with their spec, calibration and the
    parameters (thresholds) of the infer jobs that used them on this collection."""
    stmt = (
        select(Box.model_version_id)
        .join(ImageRow, Box.image_id == ImageRow.id)
        .where(ImageRow.collection_id == collection_id, IMAGE_OK, box_filter(selection), Box.model_version_id.is_not(None))
        .distinct()
    )
    if model_version_id is not None:
        stmt = stmt.where(Box.model_version_id == model_version_id)
    ids = sorted(v for (v,) in session.execute(stmt).all())
    if not ids:
        return []
    infer_params: dict[int, dict[str, Any]] = {}
    jobs = session.execute(select(Job.params, Job.result).where(Job.collection_id == collection_id, Job.kind == JobKind.infer).order_by(Job.id)).all()
    for params, result in jobs:  # the version an infer job used is in its result (its params may say "imagenet")
        used = (result or {}).get("model_version_id") if isinstance(result, dict) else None
        if used is None and isinstance(params, dict):
            used = params.get("model_version_id")
        if isinstance(used, int) and used in ids:
            infer_params[used] = params if isinstance(params, dict) else {}  # the latest infer job wins
    out = []
    for mv in session.execute(select(ModelVersion).where(ModelVersion.id.in_(ids)).order_by(ModelVersion.id)).scalars():
        out.append(
            {
                "id": mv.id,
                "name": mv.name,
                "arch": mv.arch,
                "spec": mv.spec,
                "calibration": mv.calibration,
                "infer_params": infer_params.get(mv.id),
                "created_at": mv.created_at.isoformat() if mv.created_at else None,
            }
        )
    return out


def export_collection(
    session: Session,
    blobs: LocalBlobStore,
    collection_id: int,
    fmt: str,
    out_path: Path | str,
    *,
    status: str = "accepted",
    source: str = "predictions",
    model_version_id: int | None = None,
) -> dict[str, Any]:
    """Export a collection's boxes, streaming (constant memory), and return a summary.

    Args:
        fmt: ``coco`` (detection JSON), ``coco-results`` (flat results list), ``yolo`` or ``voc``
            (directory, or zip when ``out_path`` ends in ``.zip``).
        status: ``accepted`` (reviewed-good boxes) or ``all`` (every non-rejected proposal too).
        source: ``predictions`` (CAM and human boxes, per ``status``) or ``ground_truth``
            (the imported ground truth, ``status`` ignored; never mixed into the other).
        model_version_id: only boxes made by this model version.

    Returns: ``{"format", "path", "status", "source", "images", "annotations", "skipped_boxes",
    "categories", "model_versions", "seconds", ...}`` (JSON-serialisable).
    """
    if fmt not in EXPORT_FORMATS:
        raise FormatError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")
    selection = _selection(status, source)
    collection = load_collection(session, collection_id)
    categories = category_map(session, collection_id)
    out_path = Path(out_path)
    started = time.perf_counter()
    versions = model_versions_info(session, collection_id, selection, model_version_id)
    if fmt in ("coco", "coco-results"):
        out_path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "coco":
        info = {
            "description": f"camlabel export of collection {collection.name!r}",
            "collection_id": collection.id,
            "date_created": datetime.now(timezone.utc).isoformat(),
            "source": source,
            "status": None if source == "ground_truth" else status,
            "bbox_format": "xywh absolute pixels of the displayed (EXIF-rotated) image",
            "model_versions": versions,
        }
        counts: dict[str, int] = write_coco(session, collection_id, categories, selection, out_path, info, model_version_id=model_version_id)
    elif fmt == "coco-results":
        counts = write_coco_results(session, collection_id, categories, selection, out_path, model_version_id=model_version_id)
    else:
        writer = write_yolo if fmt == "yolo" else write_voc
        with ExportSink(out_path) as sink:
            counts = writer(session, blobs, collection_id, categories, selection, sink, model_version_id=model_version_id)
    return {
        "format": fmt,
        "path": str(out_path),
        "collection_id": collection_id,
        "status": None if source == "ground_truth" else status,
        "source": source,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories.names)],
        "model_versions": [v["id"] for v in versions],
        "seconds": round(time.perf_counter() - started, 3),
        **counts,
    }
