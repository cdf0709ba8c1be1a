"""Ground-truth uploads from the dashboard and the API: one file (COCO ``.json``; VOC ``.zip`` or
``.xml``; YOLO ``.zip`` with ``data.yaml``) imported with ``worker.formats.import_ground_truth``
in the request (annotation files are small next to the images), committed when at least one
image got ground truth."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from sqlalchemy.orm import Session

from web.services.collections import get_collection
from web.services.errors import Invalid
from web.services.uploads import UploadedFileLike
from worker.formats import IMPORT_FORMATS, IMPORT_SUFFIXES, FormatError, GtImportReport, import_ground_truth

MAX_LISTED = 20


def import_ground_truth_upload(session: Session, data_dir: Path, collection_id: int, upload: UploadedFileLike | None,
                               fmt: str | None) -> GtImportReport:
    """Import an uploaded ground-truth file into collection ``collection_id`` (``NotFound`` when
    there is none); returns the report.

    ``Invalid`` (naming the field) for a missing file, an unknown format or a file type the format
    does not take, and when nothing could be imported (the report's first reasons in the
    message); nothing is stored then."""
    get_collection(session, collection_id)
    if fmt not in IMPORT_FORMATS:
        raise Invalid("bad_format", f"format must be one of {list(IMPORT_FORMATS)}, not {str(fmt)[:40]!r}", field="format")
    if upload is None or not upload.filename:
        raise Invalid("no_file", "choose the ground-truth file to upload", field="file")
    suffix = Path(upload.filename).suffix.lower()
    if suffix not in IMPORT_SUFFIXES[fmt]:
        raise Invalid("bad_file", f"a {fmt} ground-truth upload is a {' or '.join(IMPORT_SUFFIXES[fmt])} file, not {suffix or 'a file without extension'!r}",
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
            raise Invalid("bad_ground_truth", str(exc).replace(str(path), str(upload.filename)), field="file") from exc
        if not report.ok:
            session.rollback()
            reasons = "; ".join(f"{i.file}: {i.reason}" for i in report.errors[:3]) or "no file named an image of the collection"
            raise Invalid("nothing_imported", f"no ground truth was imported: {reasons}", field="file", report=report.to_dict())
        session.commit()
        return report
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report_summary(report: GtImportReport) -> str:
    """One line: what a ground-truth import did."""
    text = (f"Ground truth imported: {report.images_matched} image(s) matched, {report.boxes_imported} box(es) "
            f"({report.boxes_replaced} replaced, {report.boxes_clipped} clipped, {report.boxes_rejected} rejected)")
    if report.categories_created:
        text += "; new categories: " + ", ".join(report.categories_created)
    return text + "."


def report_issues(report: GtImportReport) -> list[str]:
    """The report's errors and warnings as lines, at most ``MAX_LISTED`` (then a count of the rest)."""
    lines = [f"{kind}: {i.file}: {i.reason}" for kind, issues in (("error", report.errors), ("warning", report.warnings)) for i in issues]
    if len(lines) > MAX_LISTED:
        return lines[:MAX_LISTED] + [f"… and {len(lines) - MAX_LISTED} more"]
    return lines
