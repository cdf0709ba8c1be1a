"""Ground-truth uploads from the dashboard and the API: one file (COCO ``.json``; VOC ``.zip`` or
``.xml``; YOLO ``.zip`` with ``data.yaml``) imported with ``worker.formats.import_ground_truth``
in the request (annotation files are small next to the images), committed when at least one
image got ground truth."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from web.errors import ApiError
from worker.formats import IMPORT_FORMATS

SUFFIXES = {"coco": (".json", ".zip"), "voc": (".zip", ".xml"), "yolo": (".zip",)}
MAX_LISTED = 20


def import_ground_truth_upload(session: Session, data_dir: Path, collection_id: int, upload: FileStorage | None, fmt: str | None) -> Any:
    """Import an uploaded ground-truth file; returns the ``GtImportReport``.

    400 (naming the field) for a missing file, an unknown format or a file type the format
    does not take, and when nothing could be imported (the report's first reasons in the
    message); nothing is stored then."""
    from worker.formats import FormatError, import_ground_truth

    if fmt not in IMPORT_FORMATS:
        raise ApiError(400, "bad_format", f"format must be one of {list(IMPORT_FORMATS)}, not {str(fmt)[:40]!r}", field="format")
    if upload is None or not upload.filename:
        raise ApiError(400, "no_file", "choose the ground-truth file to upload", field="file")
    suffix = Path(upload.filename).suffix.lower()
    if suffix not in SUFFIXES[fmt]:
        raise ApiError(400, "bad_file", f"a {fmt} ground-truth upload is a {' or '.join(SUFFIXES[fmt])} file, not {suffix or 'a file without extension'!r}",
                       field="file")
    scratch = data_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="gt-", dir=scratch))
    try:
        path = folder / f"ground-truth{suffix}"
        upload.save(path)
        try:
            report = import_ground_truth(session, collection_id, path, fmt)
        except FormatError as exc:
            session.rollback()
            raise ApiError(400, "bad_ground_truth", str(exc).replace(str(path), upload.filename), field="file") from exc
        if not report.ok:
            session.rollback()
            reasons = "; ".join(f"{i.file}: {i.reason}" for i in report.errors[:3]) or "no file named an image of the collection"
            raise ApiError(400, "nothing_imported", f"no ground truth was imported: {reasons}", field="file", report=report.to_dict())
        session.commit()
        return report
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report_summary(report: Any) -> str:
    """One line: what a ground-truth import did."""
    text = (f"Ground truth imported: {report.images_matched} image(s) matched, {report.boxes_imported} box(es) "
            f"({report.boxes_replaced} replaced, {report.boxes_clipped} clipped, {report.boxes_rejected} rejected)")
    if report.categories_created:
        text += "; new categories: " + ", ".join(report.categories_created)
    return text + "."


def report_issues(report: Any) -> list[str]:
    """The report's errors and warnings as lines, at most ``MAX_LISTED`` (then a count of the rest)."""
    lines = [f"{kind}: {i.file}: {i.reason}" for kind, issues in (("error", report.errors), ("warning", report.warnings)) for i in issues]
    if len(lines) > MAX_LISTED:
        return lines[:MAX_LISTED] + [f"… and {len(lines) - MAX_LISTED} more"]
    return lines
