"""Exports: the format registry, ``export_collection`` (one entry point for every format) and
``export_file`` (an export as one named file, as the export job, the API and the CLI deliver it)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
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


@dataclass(frozen=True)
class ExportFormat:
    """One export format and the file it is delivered as."""

    name: str  # the ``format`` parameter: coco, coco-results, yolo, voc
    suffix: str  # of the delivered file: ``.json`` (one JSON document) or ``.zip`` (a folder tree, zipped)
    mimetype: str  # of the delivered file
    splits: bool  # takes a seeded train/val split (``val_fraction``, ``seed``)

    @property
    def is_archive(self) -> bool:
        """Delivered as a zip of a folder tree (:class:`worker.formats.sink.ExportSink`)."""
        return self.suffix == ".zip"


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("coco", ".json", "application/json", splits=False),
    ExportFormat("coco-results", ".json", "application/json", splits=False),
    ExportFormat("yolo", ".zip", "application/zip", splits=True),
    ExportFormat("voc", ".zip", "application/zip", splits=True),
)}
EXPORT_FORMATS = tuple(FORMATS)
SPLIT_FORMATS = tuple(name for name, f in FORMATS.items() if f.splits)
SOURCES = ("predictions", "ground_truth")
_UNSAFE_NAME = re.compile(r"[^\w.-]+")


def export_format(name: str) -> ExportFormat:
    """The registered format ``name``; :class:`FormatError` for any other."""
    try:
        return FORMATS[name]
    except KeyError:
        raise FormatError(f"unknown export format {name!r}; expected one of {EXPORT_FORMATS}") from None


def download_name(collection_name: str, fmt: str, day: date | None = None) -> str:
    """``<collection>-<format>-<YYYYMMDD><suffix>``: the file name a download is saved under
    (characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``)."""
    suffix = export_format(fmt).suffix
    safe = _UNSAFE_NAME.sub("_", collection_name).strip("._") or "collection"
    day = day or datetime.now(UTC).date()
    return f"{safe}-{fmt}-{day:%Y%m%d}{suffix}"


@dataclass(frozen=True)
class ExportFile:
    """An export written as one file: ``path`` (``export.json`` or ``export.zip``), the
    ``filename`` to deliver it under, its ``format`` and the summary of :func:`export_collection`
    (without ``path``)."""

    path: Path
    filename: str
    format: ExportFormat
    summary: dict[str, Any]


EXPORT_OPTIONS = ("status", "source", "model_version_id", "include_unreviewed", "val_fraction", "seed")


def export_file(session: Session, blobs: LocalBlobStore, collection_id: int, params: Mapping[str, Any], folder: Path) -> ExportFile:
    """Write collection ``collection_id``'s export into ``folder`` as one file (a .json, or a .zip
    for folder formats): the one export path of the export job, the API download and the CLI.

    ``params``: ``format`` (default ``coco``) and any of :data:`EXPORT_OPTIONS` (``None`` values
    take the defaults of :func:`export_collection`). :class:`FormatError` for bad parameters."""
    fmt = export_format(str(params.get("format") or "coco"))
    options = {name: params[name] for name in EXPORT_OPTIONS if params.get(name) is not None}
    options["status"] = str(options.get("status") or "accepted")
    collection = load_collection(session, collection_id)
    out = folder / f"export{fmt.suffix}"
    summary = export_collection(session, blobs, collection_id, fmt.name, out, **options)
    summary.pop("path", None)
    return ExportFile(path=out, filename=download_name(collection.name, fmt.name), format=fmt, summary=summary)


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
    ids = sorted(v for (v,) in session.execute(stmt).all() if v is not None)  # NULLs are filtered out above
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
    export_format(fmt)
    selection = _selection(status, source)
    reviewed_only = source == "predictions" and not include_unreviewed
    if val_fraction and fmt not in SPLIT_FORMATS:
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
        now = datetime.now(UTC)
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
