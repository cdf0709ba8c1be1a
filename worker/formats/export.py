"""``export_collection``: one entry point for every export format."""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.formats.coco import write_coco, write_coco_results
from worker.formats.perimage import choose_split, write_voc, write_yolo
from worker.formats.selection import BOX_STATUSES, IMAGE_OK, FormatError, box_filter, category_map, load_collection
from worker.formats.sink import ExportSink
from worker.store.blobs import LocalBlobStore
from worker.store.models import Box, Job, JobKind, ModelVersion
from worker.store.models import Image as ImageRow

EXPORT_FORMATS = ("coco", "coco-results", "yolo", "voc")
SOURCES = ("predictions", "ground_truth")
SUFFIXES = {"coco": ".json", "coco-results": ".json", "yolo": ".zip", "voc": ".zip"}
_UNSAFE_NAME = re.compile(r"[^\w.-]+")


def download_name(collection_name: str, fmt: str, day: date | None = None) -> str:
    """``<collection>-<format>-<YYYYMMDD><suffix>``: the file name a download is saved under
    (characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``)."""
    if fmt not in SUFFIXES:
        raise FormatError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")
    safe = _UNSAFE_NAME.sub("_", collection_name).strip("._") or "collection"
    day = day or datetime.now(timezone.utc).date()
    return f"{safe}-{fmt}-{day:%Y%m%d}{SUFFIXES[fmt]}"


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("camlabel")
    except PackageNotFoundError:
        return "unknown"


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
    include_unreviewed: bool = False,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Export a collection's boxes, streaming (constant memory), and return a summary.

    Args:
        fmt: ``coco`` (detection JSON), ``coco-results`` (flat results list), ``yolo`` or ``voc``
            (directory, or zip when ``out_path`` ends in ``.zip``).
        status: ``accepted`` (reviewed-good boxes) or ``all`` (every non-rejected proposal too).
        source: ``predictions`` (CAM and human boxes, per ``status``) or ``ground_truth``
            (the imported ground truth, ``status`` ignored; never mixed into the other).
        model_version_id: only boxes made by this model version.
        include_unreviewed: also images nobody reviewed yet. Off by default: such an image would
            be exported with only its accepted boxes (often none), and a detector trained on it
            learns its unreviewed objects as background. Ground-truth exports hold every image.
        val_fraction, seed: YOLO/VOC only: hold out a seeded random ``val_fraction`` of the
            images for validation (``images/val`` / ``ImageSets/Main/val.txt``).

    Returns: ``{"format", "path", "status", "source", "images", "annotations", "skipped_boxes",
    "categories", "model_versions", "seconds", ...}`` (JSON-serialisable).
    """
    if fmt not in EXPORT_FORMATS:
        raise FormatError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")
    selection = _selection(status, source)
    reviewed_only = source == "predictions" and not include_unreviewed
    if val_fraction and fmt not in ("yolo", "voc"):
        raise FormatError(f"a train/val split (val_fraction) is for yolo and voc exports, not {fmt}")
    collection = load_collection(session, collection_id)
    categories = category_map(session, collection_id)
    out_path = Path(out_path)
    started = time.perf_counter()
    versions = model_versions_info(session, collection_id, selection, model_version_id)
    if fmt in ("coco", "coco-results"):
        out_path.parent.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {}
    if fmt == "coco":
        now = datetime.now(timezone.utc)
        what = "ground-truth boxes" if source == "ground_truth" else f"{status} boxes of {'all' if include_unreviewed else 'reviewed'} images"
        info = {
            "description": f"camlabel export of collection {collection.name}: {what}",
            "version": _package_version(),
            "year": now.year,
            "date_created": now.isoformat(timespec="seconds"),
            "contributor": "camlabel",
            "url": "",
            "model_version_id": versions[0]["id"] if len(versions) == 1 else None,
            "model_version_ids": [v["id"] for v in versions],
        }
        counts: dict[str, int] = write_coco(session, collection_id, categories, selection, out_path, info, model_version_id=model_version_id,
                                            reviewed_only=reviewed_only)
    elif fmt == "coco-results":
        counts = write_coco_results(session, collection_id, categories, selection, out_path, model_version_id=model_version_id,
                                    reviewed_only=reviewed_only)
    else:
        split = choose_split(session, collection_id, fraction=float(val_fraction), seed=int(seed), reviewed_only=reviewed_only)
        writer = write_yolo if fmt == "yolo" else write_voc
        with ExportSink(out_path) as sink:
            counts = writer(session, blobs, collection_id, categories, selection, sink, model_version_id=model_version_id,
                            reviewed_only=reviewed_only, split=split)
        extra = {"val_fraction": split.fraction, "seed": split.seed}
    return {
        "format": fmt,
        "path": str(out_path),
        "collection_id": collection_id,
        "status": None if source == "ground_truth" else status,
        "source": source,
        "include_unreviewed": not reviewed_only,
        **extra,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories.names)],
        "model_versions": [v["id"] for v in versions],
        "seconds": round(time.perf_counter() - started, 3),
        **counts,
    }
