"""Import ground-truth boxes (COCO JSON, VOC XML folders, YOLO txt folders) into a collection.

Boxes are stored as ``source=ground_truth``; importing again replaces the ground truth of the
images named, never duplicates it. Every bad file or box is reported with a reason and the
rest is imported. The caller commits (or rolls back) the session.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from worker.formats.matching import ImageMatcher, ImageRef
from worker.formats.readers import GtRecord, read_coco, read_voc, read_yolo, yolo_class_names
from worker.formats.selection import FormatError, load_collection
from worker.store.db import rows_matched
from worker.store.models import Box, BoxSource, Category, ReviewStatus

#: Ground-truth formats and the files an upload of each may be (a zip holds the format's folder layout).
IMPORT_SUFFIXES: dict[str, tuple[str, ...]] = {"coco": (".json", ".zip"), "voc": (".zip", ".xml"), "yolo": (".zip",)}
IMPORT_FORMATS = tuple(IMPORT_SUFFIXES)
BATCH = 1000
CLIP_NOTE_PX = 1.0


@dataclass
class FileIssue:
    """A problem with one file (or one image entry of a COCO file)."""

    file: str
    reason: str


@dataclass
class GtImportReport:
    """What a ground-truth import did. ``errors``: things not imported; ``warnings``: imported with a fix."""

    format: str
    files: int = 0
    images_matched: int = 0
    boxes_imported: int = 0
    boxes_replaced: int = 0
    boxes_clipped: int = 0
    boxes_rejected: int = 0
    files_failed: int = 0
    categories_created: list[str] = field(default_factory=list)
    errors: list[FileIssue] = field(default_factory=list)
    warnings: list[FileIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when at least one image got ground truth."""
        return self.images_matched > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def _local_root(path: Path) -> Iterator[Path]:
    """``path`` itself, or a temporary folder holding a zip's annotation files (unsafe names refused)."""
    if not (path.is_file() and path.suffix.lower() == ".zip"):
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="camlabel-gt-"))
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = PurePosixPath(info.filename)
                if info.is_dir() or name.is_absolute() or ".." in name.parts or name.suffix.lower() not in (".xml", ".txt", ".json", ".yaml", ".yml", ".names"):
                    continue
                target = tmp.joinpath(*name.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        yield tmp
    except zipfile.BadZipFile as exc:
        raise FormatError(f"{path}: not a readable zip file: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _records(root: Path, fmt: str, report: GtImportReport) -> Iterator[GtRecord]:
    if fmt == "coco":
        if root.is_dir():
            files = sorted(root.rglob("*.json"))
            if len(files) != 1:
                raise FormatError(f"{root}: expected one COCO .json file, found {len(files)}")
            root = files[0]
        yield from read_coco(root)
    elif fmt == "voc":
        yield from read_voc(root)
    else:
        names = yolo_class_names(root)
        if names is None:
            report.warnings.append(FileIssue(str(root.name), "no class names (data.yaml, classes.txt); categories are named by class index"))
        yield from read_yolo(root, names)


class _Categories:
    """Category ids by name; unknown names become new categories of the collection."""

    def __init__(self, session: Session, collection_id: int, report: GtImportReport) -> None:
        self.session, self.collection_id, self.report = session, collection_id, report
        self.ids = {name: cid for cid, name in session.execute(select(Category.id, Category.name).where(Category.collection_id == collection_id))}

    def id_for(self, name: str) -> int:
        cid = self.ids.get(name)
        if cid is None:
            category = Category(collection_id=self.collection_id, name=name)
            self.session.add(category)
            self.session.flush()
            cid = self.ids[name] = category.id
            self.report.categories_created.append(name)
        return cid


def _boxes_of(record: GtRecord, image: ImageRef, report: GtImportReport) -> list[tuple[str, float, float, float, float]]:
    """The record's boxes as xyxy pixels inside the image; bad ones reported and dropped."""
    width, height = image.width or 0, image.height or 0
    if record.size is not None and record.size != (width, height) and width and height:
        fw, fh = record.size
        if fw <= 0 or fh <= 0:
            report.warnings.append(FileIssue(record.source, f"file gives image size {fw}x{fh}; used the image's size {width}x{height}"))
        else:
            report.warnings.append(FileIssue(
                record.source, f"file gives image size {fw}x{fh} but {image.rel_path} is {width}x{height} as displayed; boxes kept in pixels"))
    if not width or not height:
        if record.size and record.size[0] > 0 and record.size[1] > 0:
            width, height = record.size
        else:
            report.errors.append(FileIssue(record.source, f"size of {image.rel_path} unknown; boxes cannot be checked"))
            report.boxes_rejected += len(record.boxes)
            return []
    out = []
    for index, box in enumerate(record.boxes, start=1):
        if box.normalised:
            cx, cy, w, h = box.coords
            x1, y1, x2, y2 = (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height
        else:
            x1, y1, x2, y2 = box.coords
        label = f"box {index} ({box.name}) [{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
        if not (x2 > x1 and y2 > y1):
            report.errors.append(FileIssue(record.source, f"{label}: degenerate box (xmax <= xmin or ymax <= ymin); not imported"))
            report.boxes_rejected += 1
            continue
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            report.errors.append(FileIssue(record.source, f"{label}: outside the image ({width}x{height}); not imported"))
            report.boxes_rejected += 1
            continue
        cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)
        moved = max(cx1 - x1, cy1 - y1, x2 - cx2, y2 - cy2)
        if moved > 0:
            report.boxes_clipped += 1
            if moved > CLIP_NOTE_PX:
                report.warnings.append(FileIssue(record.source, f"{label}: reaches {moved:.1f} px outside the image ({width}x{height}); clipped"))
        out.append((box.name, cx1, cy1, cx2, cy2))
    return out


def _flush(session: Session, image_ids: list[int], rows: list[dict[str, Any]], report: GtImportReport) -> None:
    if image_ids:
        replaced = delete(Box).where(Box.source == BoxSource.ground_truth, Box.image_id.in_(image_ids)).execution_options(synchronize_session=False)
        report.boxes_replaced += rows_matched(session, replaced) or 0
    if rows:
        session.execute(insert(Box), rows)
    image_ids.clear()
    rows.clear()


def import_ground_truth(session: Session, collection_id: int, path: Path | str, fmt: str) -> GtImportReport:
    """Read ground-truth boxes from ``path`` and store them on the matching images of a collection.

    Args:
        path: COCO: a ``.json`` file (or a folder holding one); VOC: a folder of ``*.xml``
            (searched recursively) or one file; YOLO: a folder with ``labels/**.txt`` and
            ``data.yaml``/``classes.txt``; VOC and YOLO may also be a ``.zip``.
        fmt: ``coco``, ``voc`` or ``yolo``.

    Images are matched by relative path, then by file name (YOLO: by stem); boxes are xyxy
    pixels of the displayed image, clipped when partly outside it, rejected when degenerate
    or wholly outside. Unknown category names create categories. Does not commit.

    Raises:
        FormatError: unknown format, missing path or collection.
    """
    if fmt not in IMPORT_FORMATS:
        raise FormatError(f"unknown ground-truth format {fmt!r}; expected one of {IMPORT_FORMATS}")
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder")
    load_collection(session, collection_id)
    report = GtImportReport(format=fmt)
    matcher = ImageMatcher(session, collection_id)
    categories = _Categories(session, collection_id, report)
    claimed: dict[int, str] = {}
    pending_ids: list[int] = []
    pending_rows: list[dict[str, Any]] = []
    seen_sources: set[str] = set()
    with _local_root(path) as root:
        for record in _records(root, fmt, report):
            seen_sources.add(record.source)
            if record.fatal:
                report.errors.append(FileIssue(record.source, record.fatal))
                report.files_failed += 1
                continue
            image, reason = matcher.match(record.candidates, stem_only=record.stem_only)
            if image is None and root.is_dir():
                image = matcher.match_content(root, record.candidates)
                if image is not None and image.id in claimed:
                    report.errors.append(FileIssue(
                        record.source,
                        f"its image has the same bytes as {image.rel_path}, which already has ground truth from {claimed[image.id]}; file skipped",
                    ))
                    report.files_failed += 1
                    continue
            if image is None:
                report.errors.append(FileIssue(record.source, reason + ("" if matcher.count else " (the collection has no images)")))
                report.files_failed += 1
                continue
            if not image.ok:
                report.errors.append(FileIssue(
                    record.source, f"image {image.rel_path} failed to import ({image.failure_reason or 'unreadable'}); no ground truth stored"))
                report.files_failed += 1
                continue
            if image.id in claimed:
                report.errors.append(FileIssue(record.source, f"image {image.rel_path} already has ground truth from {claimed[image.id]}; file skipped"))
                report.files_failed += 1
                continue
            claimed[image.id] = record.source
            for problem in record.problems:
                report.errors.append(FileIssue(record.source, problem + "; not imported"))
                report.boxes_rejected += 1
            for note in record.notes:
                report.warnings.append(FileIssue(record.source, note))
            report.images_matched += 1
            pending_ids.append(image.id)
            for name, x1, y1, x2, y2 in _boxes_of(record, image, report):
                pending_rows.append(
                    {
                        "image_id": image.id,
                        "category_id": categories.id_for(name),
                        "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                        "score": 1.0,
                        "source": BoxSource.ground_truth,
                        "status": ReviewStatus.accepted,
                        "version": 1,
                    }
                )
                report.boxes_imported += 1
            if len(pending_ids) >= BATCH or len(pending_rows) >= 5 * BATCH:
                _flush(session, pending_ids, pending_rows, report)
    _flush(session, pending_ids, pending_rows, report)
    report.files = len(seen_sources)
    session.flush()
    return report
