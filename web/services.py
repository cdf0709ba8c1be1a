"""Actions shared by the pages and the API: collections, uploads into staging, jobs, box edits.

Views translate request data into these calls; these functions speak SQLAlchemy and the worker's
documented entry points (``worker.jobs.submit``, ``worker.store.bulk.update_box``, ...).
"""

from __future__ import annotations

import re
import shutil
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage
from werkzeug.utils import secure_filename

from web.errors import ApiError
from web.exports import EXPORT_FORMATS, EXPORT_STATUSES, export_params  # noqa: F401 - EXPORT_* re-exported for the pages
from worker.store.review_state import mark_reviewed
from web.public import public_params, public_text
from web.validation import check_name, parse_int, require_int, require_number
from worker.importing import remove_staging, staging_root, sweep_staging
from worker.store.models import Box, BoxSource, Category, Collection, Image, Job, JobKind, ReviewOperation, ReviewStatus

JOB_KINDS_FROM_UI = ("train", "infer", "export", "evaluate", "calibrate")


# -- collections -----------------------------------------------------------------------------
def create_collection(session: Session, name: Any) -> Collection:
    """Create a collection (commits). Names follow :func:`web.validation.check_name`."""
    name = check_name(name)
    if session.scalar(select(Collection.id).where(Collection.name == name)) is not None:
        raise ApiError(409, "exists", f"a collection named {name!r} already exists")
    collection = Collection(name=name)
    session.add(collection)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise ApiError(409, "exists", f"a collection named {name!r} already exists") from exc
    return collection


def get_collection(session: Session, collection_id: int) -> Collection:
    collection = session.get(Collection, collection_id)
    if collection is None:
        raise ApiError(404, "not_found", f"no collection {collection_id}")
    return collection


def delete_collection(session: Session, blobs: Any, collection_id: int) -> None:
    """Delete a collection, its rows and the blobs only it used (the store's repository does it)."""
    from worker.store.collections_repo import delete_collection as _delete

    get_collection(session, collection_id)
    _delete(session, blobs, collection_id)
    session.commit()


# -- uploads -------------------------------------------------------------------------------
@dataclass
class StagedUpload:
    """Files saved under ``data_dir/staging/<uuid>/`` (``folder``) ready for an import job."""

    folder: Path  # the upload's staging folder, deleted when its import job ends
    path: Path  # a folder of stored files (multi-file upload) or the saved .zip, inside ``folder``
    manifest: Path | None
    n_files: int
    index: Path | None = None  # loose files: the upload index (the user's names of the stored files)


_TAG_RE = re.compile(r"^[\w][\w .\-]{0,99}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_CHARS = 1000


def stage_upload(data_dir: Path, files: Iterable[FileStorage], *, tag: str | None, manifest: FileStorage | None) -> StagedUpload:
    """Save uploaded files for import.

    One ``.zip`` is saved as is (the importer reads its folder layout and refuses absolute or
    ``..`` entries). Loose files are stored under safe names (``files/000001.jpg``, ...) beside an
    upload index that keeps each file's own relative name as the browser sent it (unicode, spaces
    and folders such as ``imgs/m0.jpg`` kept), so a manifest's rows always match. Without a
    manifest an image row shows ``<tag>/<name>`` (``name`` with no tag) and gets the tag; with one,
    ``name`` and the manifest's tags (plus ``tag``). A name with ``..``, control characters or
    given twice is refused (400).
    """
    uploads = [f for f in files if f is not None and f.filename]
    if not uploads:
        raise ApiError(400, "no_files", "choose at least one image or a .zip to upload")
    if tag:
        tag = tag.strip()
        if not _TAG_RE.match(tag):
            raise ApiError(400, "bad_tag", "a tag has 1 to 100 letters, digits, spaces, '.', '_' or '-'")
    staging = staging_root(data_dir) / uuid.uuid4().hex
    staging.mkdir(parents=True)
    try:
        return _save_upload(staging, uploads, tag=tag, manifest=manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def upload_name(filename: str) -> str:
    """The user's relative name of an uploaded file: ``imgs/m0.jpg`` kept as sent (backslashes as
    ``/``); a Windows or absolute path is reduced to its last part. 400 for ``..``, control
    characters or an over-long name."""
    from worker.import_sources import ImportSourceError, safe_relative

    raw = unicodedata.normalize("NFC", filename.replace("\\", "/"))
    if _CONTROL_RE.search(raw) or len(raw) > MAX_NAME_CHARS:
        raise ApiError(400, "bad_file_name", f"file name {filename[:100]!r} has control characters or is over {MAX_NAME_CHARS} characters")
    if raw.startswith("/") or (len(raw) >= 2 and raw[1] == ":"):
        raw = raw.rsplit("/", 1)[-1]
    try:
        return safe_relative(raw)
    except ImportSourceError as exc:
        raise ApiError(400, "bad_file_name", f"files: {exc}") from exc


def _save_upload(staging: Path, uploads: list[FileStorage], *, tag: str | None, manifest: FileStorage | None) -> StagedUpload:
    from worker.import_sources import UploadedFile, write_upload_index

    manifest_path: Path | None = None
    if manifest is not None and manifest.filename:
        manifest_path = staging / "manifest.csv"
        manifest.save(manifest_path)
    zips = [f for f in uploads if f.filename.lower().endswith(".zip")]
    if zips:
        if len(uploads) != 1:
            raise ApiError(400, "mixed_upload", "upload either one .zip or loose image files, not both")
        target = staging / "upload.zip"
        zips[0].save(target)
        _check_zip(target)
        return StagedUpload(folder=staging, path=target, manifest=manifest_path, n_files=1)
    root = staging / "files"
    root.mkdir()
    rows: list[UploadedFile] = []
    seen: set[str] = set()
    for index, upload in enumerate(uploads, start=1):
        name = upload_name(upload.filename)
        if name in seen:
            raise ApiError(400, "duplicate_file_name", f"two uploaded files are both named {name!r}")
        seen.add(name)
        suffix = Path(secure_filename(Path(name).name)).suffix.lower()
        stored = f"{index:06d}{suffix}"
        upload.save(root / stored)
        tags = (tag,) if tag else ()
        rows.append(UploadedFile(stored=stored, name=name, path=f"{tag}/{name}" if tag and manifest_path is None else name, tags=tags))
    index_path = staging / "upload.json"
    write_upload_index(index_path, rows)
    return StagedUpload(folder=staging, path=root, manifest=manifest_path, n_files=len(uploads), index=index_path)


def _check_zip(path: Path) -> None:
    """Refuse at once (400) a file that is no zip, has absolute / ``..`` entries or breaks the zip
    limits (:func:`worker.import_sources.check_zip_limits`); the importer checks again, this only
    makes the error immediate (:func:`stage_upload` removes the folder)."""

    import zipfile

    from worker.import_sources import ImportSourceError, check_zip_limits

    try:
        with zipfile.ZipFile(path) as archive:
            check_zip_limits([info for info in archive.infolist() if not info.is_dir()], "the upload")
    except (zipfile.BadZipFile, ImportSourceError) as exc:
        message = str(exc) if isinstance(exc, ImportSourceError) else "the uploaded .zip is not a valid zip archive"
        raise ApiError(400, "bad_zip", message.replace(str(path), "the upload")) from exc


# -- jobs ------------------------------------------------------------------------------------
def submit_job(session: Session, *, kind: str, collection_id: int, params: dict[str, Any], user_id: int | None) -> Job:
    """Create and enqueue a job through the worker (``worker.jobs.submit``)."""
    from worker.jobs import submit

    get_collection(session, collection_id)
    try:
        job_kind = JobKind(kind)
    except ValueError as exc:
        raise ApiError(400, "bad_kind", f"job kind must be one of {[k.value for k in JobKind]}, not {kind!r}") from exc
    from worker.jobs import JobQueueError
    from worker.preflight import JobRefused, check_job

    try:
        check_job(session, kind=job_kind, collection_id=collection_id, params=params)
    except JobRefused as exc:
        raise ApiError(400, "cannot_run", str(exc), **({"field": exc.field} if exc.field else {})) from exc

    try:
        return submit(session, kind=job_kind, collection_id=collection_id, params=params, user_id=user_id)
    except ValueError as exc:
        raise ApiError(400, "bad_job", str(exc)) from exc
    except JobQueueError as exc:
        raise ApiError(503, "queue_unavailable", str(exc)) from exc  # says the job is queued and starts once the queue is back


def import_upload(session: Session, data_dir: Path, collection_id: int, files: Iterable[FileStorage], *, tag: str | None,
                  manifest: FileStorage | None, user_id: int | None) -> tuple[Job, int]:
    """Stage an upload (see :func:`stage_upload`) and start its import job: ``(job, files staged)``.

    The job deletes the staging folder when it ends (``staging`` param); a folder whose job
    could not be recorded is deleted here, and older leftovers by :func:`sweep_staging`."""
    get_collection(session, collection_id)
    sweep_staging(session, data_dir)
    staged = stage_upload(data_dir, files, tag=tag, manifest=manifest)
    params = {"path": str(staged.path), "staging": str(staged.folder)}
    if staged.manifest is not None:
        params["manifest"] = str(staged.manifest)
    if staged.index is not None:
        params["upload_index"] = str(staged.index)
    try:
        job = submit_job(session, kind="import", collection_id=collection_id, params=params, user_id=user_id)
    except ApiError as exc:
        if exc.status != 503:  # 503: the job is recorded (the watchdog sends it again) and will read the files
            remove_staging(data_dir, staged.folder)
        raise
    except Exception:  # database down, disk full: no job will read the files
        session.rollback()
        remove_staging(data_dir, staged.folder)
        raise
    return job, staged.n_files


def job_params_from(kind: str, data: Any) -> dict[str, Any]:
    """Validated parameters of a job started from a form or JSON body."""
    params: dict[str, Any] = {}
    if kind == "train":
        if data.get("arch"):
            params["arch"] = str(data.get("arch"))
        if data.get("mode"):
            if data.get("mode") not in ("linear", "finetune"):
                raise ApiError(400, "bad_mode", "mode must be linear or finetune")
            params["mode"] = data.get("mode")
        if data.get("epochs") not in (None, ""):
            params["epochs"] = _int(data.get("epochs"), "epochs")
    elif kind == "infer":
        if data.get("model_version_id") not in (None, ""):
            params["model_version_id"] = _model_ref(data.get("model_version_id"))
    elif kind == "export":
        params.update(export_params(data))
    elif kind == "evaluate":
        params["box_status"] = data.get("box_status") or "all"
    elif kind == "calibrate":
        if data.get("model_version_id") not in (None, ""):
            params["model_version_id"] = _int(data.get("model_version_id"), "model_version_id")
        if data.get("preview") not in (None, "", False, "0", "false"):
            if data.get("preview") not in (True, "1", "true", "on"):
                raise ApiError(400, "bad_field", "preview must be true or false", field="preview")
            params["preview"] = True
    return params


IMAGENET_ARCHS = ("efficientnet_lite0", "resnet18", "resnet50")  # the built-in ImageNet classifiers


def _model_ref(value: Any) -> int | str:
    """An infer job's model: a model version id, or ``imagenet`` / ``imagenet:<arch>`` (as the CLI's ``--model``)."""
    if isinstance(value, str) and value.strip().lower().startswith("imagenet"):
        ref = value.strip().lower()
        arch = ref.split(":", 1)[1] if ":" in ref else IMAGENET_ARCHS[0]
        if ref not in ("imagenet", f"imagenet:{arch}") or arch not in IMAGENET_ARCHS:
            raise ApiError(400, "bad_value", f"model_version_id: 'imagenet' or 'imagenet:<arch>' with arch one of {list(IMAGENET_ARCHS)}",
                           field="model_version_id")
        return ref
    return _int(value, "model_version_id")


def _int(value: Any, name: str) -> int:
    """A form or JSON value as a ``bigint`` integer (400 naming ``name`` otherwise)."""
    return parse_int(value, name)


def cancel_job(session: Session, job_id: int) -> Job:
    from worker.jobs import request_cancel

    job = session.get(Job, job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    request_cancel(session, job_id)
    session.commit()
    session.refresh(job)
    if job.kind == JobKind.import_ and job.status.finished and (job.params or {}).get("staging"):
        from web.db import runtime

        remove_staging(runtime().settings.data_dir, job.params["staging"])  # cancelled while queued: no handler will run
    return job


# -- boxes -----------------------------------------------------------------------------------
_GEOMETRY = ("x1", "y1", "x2", "y2")


def edit_box(session: Session, box_id: int, data: dict[str, Any], *, user_id: int) -> Box:
    """Apply a reviewer's edit with optimistic concurrency.

    ``data``: ``version`` (required, the row version the client saw), and any of ``status``
    (accepted/rejected/proposed/edited), ``category_id``, ``x1 y1 x2 y2`` (pixels, xyxy, clipped to
    the image). A geometry or category change without an explicit status sets ``edited``.
    A stale ``version`` raises 409 with the current row, never overwriting it.
    """
    from worker.store.bulk import BoxNotFoundError, StaleEditError, update_box

    box = _editable_box(session, box_id)
    if "version" not in data:
        raise ApiError(400, "version_required", "send the box's current 'version' with every edit", field="version")
    expected = require_int(data, "version", minimum=0)
    changes: dict[str, Any] = {}
    if "status" in data:
        changes["status"] = _status(data["status"])
    if "category_id" in data:
        category_id = require_int(data, "category_id")
        _check_category(session, box.image_id, category_id)
        changes["category_id"] = category_id
    if any(k in data for k in _GEOMETRY):
        image = session.get(Image, box.image_id)
        coords = {k: require_number(data, k) if k in data else float(getattr(box, k)) for k in _GEOMETRY}
        changes.update(_clip_box(coords, image))
    if not changes:
        raise ApiError(400, "no_changes", "nothing to change: send status, category_id or x1/y1/x2/y2")
    if "status" not in changes and ("category_id" in changes or any(k in changes for k in _GEOMETRY)):
        changes["status"] = ReviewStatus.edited
    changes["reviewer_id"] = user_id
    session.expunge(box)
    try:
        updated = update_box(session, box_id, expected, **changes)
    except StaleEditError as exc:
        session.rollback()
        current = session.get(Box, box_id)
        raise ApiError(409, "stale_edit", "this box was changed by someone else; reload to see the current version",
                       current=box_json(current) if current is not None else None) from exc
    except BoxNotFoundError as exc:
        session.rollback()
        raise _deleted(box_id) from exc
    except ValueError as exc:
        session.rollback()
        raise ApiError(400, "bad_edit", str(exc)) from exc
    mark_reviewed(session, [updated.image_id], user_id=user_id)
    session.commit()
    return updated


def create_box(session: Session, image_id: int, data: dict[str, Any], *, user_id: int) -> Box:
    """A box drawn by a reviewer: source ``human``, status ``accepted``, no score."""
    from worker.store.bulk import refresh_image_box_stats

    image = session.get(Image, image_id)
    if image is None:
        raise ApiError(404, "not_found", f"no image {image_id}")
    if "category_id" not in data:
        raise ApiError(400, "category_required", "a new box needs a category_id", field="category_id")
    category_id = require_int(data, "category_id")
    _check_category(session, image_id, category_id)
    coords = {k: require_number(data, k) for k in _GEOMETRY}
    box = Box(image_id=image_id, category_id=category_id, score=None, source=BoxSource.human, status=ReviewStatus.accepted,
              reviewer_id=user_id, **_clip_box(coords, image))
    session.add(box)
    session.flush()
    refresh_image_box_stats(session, [image_id])
    mark_reviewed(session, [image_id], user_id=user_id)
    session.commit()
    return box


def delete_box(session: Session, box_id: int, version: int, *, user_id: int | None = None) -> None:
    """Delete a box if it is still at ``version`` (409 otherwise); its image counts as reviewed."""
    from sqlalchemy import delete

    from worker.store.bulk import refresh_image_box_stats

    box = _editable_box(session, box_id)
    image_id = box.image_id
    result = session.execute(delete(Box).where(Box.id == box_id, Box.version == version, Box.source != BoxSource.ground_truth)
                             .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        current = session.get(Box, box_id)
        if current is None:
            raise _deleted(box_id)
        raise ApiError(409, "stale_edit", "this box was changed by someone else; reload to see the current version",
                       current=box_json(current) if current is not None else None)
    refresh_image_box_stats(session, [image_id])
    mark_reviewed(session, [image_id], user_id=user_id)
    session.commit()


def _editable_box(session: Session, box_id: int) -> Box:
    """The box a reviewer may change: 404 when it is gone, 403 when it is ground truth."""
    box = session.get(Box, box_id)
    if box is None:
        raise _deleted(box_id)
    if box.source == BoxSource.ground_truth:
        raise ApiError(403, "ground_truth_read_only", f"box {box_id} is ground truth, which is read-only here; "
                       "import the ground truth again to change it")
    return box


def _deleted(box_id: int) -> ApiError:
    return ApiError(404, "box_deleted", f"box {box_id} no longer exists: someone deleted it; reload the image", current=None)


def _status(raw: Any) -> ReviewStatus:
    values = [s.value for s in ReviewStatus]
    if not isinstance(raw, str) or raw not in values:
        raise ApiError(400, "bad_status", f"status: must be one of {values}, not {str(raw)[:40]!r}", field="status")
    return ReviewStatus(raw)


def bulk_accept(session: Session, collection_id: int, category_id: int, min_score: float, *, user_id: int) -> ReviewOperation:
    """Accept every still-proposed CAM box of ``category_id`` scoring ``>= min_score`` as one
    recorded operation (``n_boxes`` boxes; undone as one action). Each row's version goes up by
    one, so an open image view editing one of them gets a 409."""
    from worker.store.review_ops import OperationError
    from worker.store.review_ops import bulk_accept as accept_by_score

    get_collection(session, collection_id)
    try:
        operation = accept_by_score(session, collection_id, category_id, min_score, user_id=user_id)
    except OperationError as exc:
        session.rollback()
        raise ApiError(400, "bad_value", str(exc)) from exc
    session.commit()
    return operation


def set_no_objects(session: Session, image_id: int, versions: Any, *, user_id: int | None) -> tuple[Image, list[Box]]:
    """Mark an image "no objects" (a reviewed negative): its boxes that are not rejected yet are
    rejected. ``versions`` (``{box id: version}`` as the client saw them, or ``None`` to take
    the boxes as they are now): a box missing from it or moved on is a 409 and nothing changes.
    Returns the image and the boxes rejected (commits)."""
    from worker.store.bulk import StaleEditError
    from worker.store.review_state import set_no_objects as _set

    image = session.get(Image, image_id)
    if image is None:
        raise ApiError(404, "not_found", f"no image {image_id}")
    seen: dict[int, int] | None = None
    if versions is not None:
        if not isinstance(versions, dict):
            raise ApiError(400, "bad_value", "versions: send {box_id: version} for the boxes you saw", field="versions")
        seen = {parse_int(k, f"versions.{str(k)[:40]}"): parse_int(v, f"versions.{str(k)[:40]}", minimum=0)
                for k, v in versions.items()}  # bigint-bounded: a 400 naming the entry, never a database error
    try:
        rejected = _set(session, image_id, user_id=user_id, versions=seen)
    except StaleEditError as exc:
        session.rollback()
        current = session.get(Box, exc.box_id)
        raise ApiError(409, "stale_edit", f"box {exc.box_id} changed since you loaded the image; reload it and mark it again",
                       current=box_json(current) if current is not None else None) from exc
    session.commit()
    boxes = list(session.scalars(select(Box).where(Box.id.in_(rejected)).order_by(Box.id))) if rejected else []
    session.refresh(image)
    return image, boxes


def clear_no_objects(session: Session, image_id: int, *, user_id: int | None) -> Image:
    """Take back a "no objects" mark (the image stays reviewed; commits)."""
    from worker.store.review_state import clear_no_objects as _clear

    image = session.get(Image, image_id)
    if image is None:
        raise ApiError(404, "not_found", f"no image {image_id}")
    _clear(session, image_id, user_id=user_id)
    session.commit()
    session.refresh(image)
    return image


def review_state_json(image: Image, boxes: list[Box] | None = None) -> dict[str, Any]:
    """``{"image_id", "review_state", "boxes"}``: an image's review state and the boxes an action changed."""
    state = image.review_state.value if hasattr(image.review_state, "value") else str(image.review_state)
    return {"image_id": image.id, "review_state": state, "boxes": [box_json(b) for b in boxes or []]}


def _check_category(session: Session, image_id: int, category_id: int) -> None:
    image = session.get(Image, image_id)
    category = session.get(Category, category_id)
    if image is None or category is None or category.collection_id != image.collection_id:
        raise ApiError(400, "bad_category", f"category {category_id} does not belong to this image's collection")


def _clip_box(coords: dict[str, float], image: Image | None) -> dict[str, float]:
    x1, x2 = sorted((coords["x1"], coords["x2"]))
    y1, y2 = sorted((coords["y1"], coords["y2"]))
    if image is not None and image.width and image.height:
        x1, x2 = max(0.0, x1), min(float(image.width), x2)
        y1, y2 = max(0.0, y1), min(float(image.height), y2)
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise ApiError(400, "bad_box", "a box must be at least 1 pixel wide and high inside the image")
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}


# -- JSON shapes -----------------------------------------------------------------------------
def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def box_json(box: Box) -> dict[str, Any]:
    return {
        "id": box.id, "image_id": box.image_id, "category_id": box.category_id,
        "x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2, "score": box.score,
        "source": BoxSource(box.source).value, "status": ReviewStatus(box.status).value, "version": box.version,
        "model_version_id": box.model_version_id, "reviewer_id": box.reviewer_id,
    }


def image_json(image: Image) -> dict[str, Any]:
    return {
        "id": image.id, "collection_id": image.collection_id, "rel_path": image.rel_path, "width": image.width,
        "height": image.height, "status": image.status.value if hasattr(image.status, "value") else image.status,
        "failure_reason": image.failure_reason, "n_boxes": image.n_boxes, "min_score": image.min_score,
        "max_score": image.max_score, "url": f"/blobs/{image.storage_key}" if image.storage_key else None,
        "thumb_url": f"/blobs/{image.thumb_key or image.storage_key}" if (image.thumb_key or image.storage_key) else None,
    }


def job_json(job: Job) -> dict[str, Any]:
    """A job as users see it: no server paths in ``params``, ``error`` or ``result`` (:mod:`web.public`)."""
    from web.db import runtime

    data_dir = runtime().settings.data_dir
    return {
        "id": job.id, "collection_id": job.collection_id, "kind": JobKind(job.kind).value, "status": job.status.value,
        "done": job.done, "total": job.total, "error": public_text(job.error, data_dir), "params": public_params(job.params),
        "result": public_text(job.result, data_dir),
        "cancel_requested": job.cancel_requested, "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
    }


def collection_json(collection: Collection) -> dict[str, Any]:
    return {"id": collection.id, "name": collection.name, "created_at": _iso(collection.created_at),
            "categories": [{"id": c.id, "name": c.name} for c in collection.categories]}
