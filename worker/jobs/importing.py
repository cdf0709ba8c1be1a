"""The import job: files from a folder, .zip or manifest into images, thumbnails and tags.

Params: :class:`worker.jobs.params.ImportParams` (``path``, a folder or .zip the worker can read,
optional ``manifest`` and, for a web upload, ``staging`` and ``upload_index``).
Files the source leaves out (symbolic links, hidden files, manifest rows naming no file) and
non-image files (by extension) are *skipped*: the result lists each with its reason
(``skipped``, first :data:`MAX_REPORTED`; ``skipped_count``) and ``summary`` says it in one line
("imported 1 of 4, 3 skipped (...)"), which the job view shows. An import that imports nothing
(and finds no file already in the collection) fails with that summary as its error.
For each image file, in the source's fixed order, in chunks of ``ctx.chunk_size`` files:

- the bytes are hashed (SHA-256); a file the collection already holds is a ``duplicate``;
- the image is decoded with :func:`camcore.images.load_image` (EXIF applied: ``width``/
  ``height`` are displayed pixels); a file that fails, or a truncated JPEG, becomes an image
  row with ``status=failed`` and its reason, and the import goes on;
- the original goes to blobs kind ``images``, a JPEG thumbnail (longest side
  :data:`THUMB_SIZE` px) to ``thumbs``; tags become categories of the collection.

Each chunk's rows and the job's cursor are committed together, so a resumed import starts at
the first unfinished chunk, and re-imports never duplicate (``(collection, sha256)`` is unique).

A web upload's job has param ``staging`` naming its folder (:mod:`worker.staging`). Once the
job ends (succeeded, failed or cancelled) the folder is deleted: the images now live in the blob
store. It stays while the job can still resume (lease lost to another worker, a transient error
Celery retries, a worker shutting down). A ``path`` given by hand is never deleted.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import Counter
from pathlib import PurePosixPath
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import select

from worker.import_sources import Entry, ImportSourceError, Skipped, list_source
from worker.jobs.params import ImportParams
from worker.queue.context import JobContext, JobFailed
from worker.queue.lease import LeaseLost
from worker.queue.transient import is_transient
from worker.staging import remove_staging
from worker.store.bulk import insert_image_tags, insert_images_detailed
from worker.store.collections_repo import get_or_create_categories
from worker.store.models import Image

log = logging.getLogger(__name__)

THUMB_SIZE = 256
COUNTERS = ("imported", "duplicates", "failed", "skipped_non_image")
MAX_REPORTED = 50
NON_IMAGE_REASON = "not an image file (by its extension)"


def make_thumbnail(image: PILImage.Image, size: int = THUMB_SIZE) -> bytes:
    """JPEG bytes of ``image`` scaled so its longest side is at most ``size`` pixels."""
    thumb = image.copy()
    thumb.thumbnail((size, size), PILImage.Resampling.BILINEAR)
    buffer = io.BytesIO()
    thumb.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _read(entry: Entry, collection_id: int) -> tuple[bytes | None, dict[str, Any]]:
    """The file's bytes and the start of its image row (a failed row when it cannot be read)."""
    try:
        data = entry.read()
    except (OSError, ImportSourceError) as exc:
        return None, {"collection_id": collection_id, "sha256": hashlib.sha256(f"unreadable:{entry.rel_path}".encode()).hexdigest(),
                      "rel_path": entry.rel_path, "status": "failed", "failure_reason": f"could not read the file: {exc}"}
    return data, {"collection_id": collection_id, "sha256": hashlib.sha256(data).hexdigest(), "rel_path": entry.rel_path}


def _decode_and_store(entry: Entry, data: bytes, row: dict[str, Any], blobs: Any) -> dict[str, Any]:
    """Decode one image and store it plus its thumbnail; returns the completed (ok or failed) row."""
    from camcore.images import ImageLoadError, load_image

    try:
        image = load_image(data)
        if image.info.get("camlabel_truncated"):
            raise ImageLoadError("truncated image file: the data ends before the last pixel row")
    except ImageLoadError as exc:
        return {**row, "status": "failed", "failure_reason": exc.reason}
    except Exception as exc:  # noqa: BLE001 - any decoder error is this image's failure, not the job's
        return {**row, "status": "failed", "failure_reason": f"{type(exc).__name__}: {exc}"}
    suffix = PurePosixPath(entry.rel_path).suffix.lower()
    width, height = image.size
    return {**row, "status": "ok", "width": width, "height": height,
            "storage_key": blobs.put_bytes(data, kind="images", suffix=suffix),
            "thumb_key": blobs.put_bytes(make_thumbnail(image), kind="thumbs", suffix=".jpg")}


def _job_ends_after(exc: BaseException) -> bool:
    """Whether :func:`worker.queue.execution.execute` records the job as finished after ``exc``: not
    when the lease was lost (another worker goes on), for a transient error (Celery retries) or
    when the process is stopping (the watchdog requeues the job)."""
    return isinstance(exc, Exception) and not isinstance(exc, LeaseLost) and not is_transient(exc)


def run_import_job(ctx: JobContext) -> dict[str, Any]:
    """Handler of ``import`` jobs (see the module docstring); deletes a staged upload once the job ends."""
    staging = ctx.params.get("staging")
    try:
        result = _import(ctx, ctx.read_params(ImportParams))
    except BaseException as exc:
        if staging and _job_ends_after(exc):
            remove_staging(ctx.runtime.settings.data_dir, staging)
        raise
    if staging:
        remove_staging(ctx.runtime.settings.data_dir, staging)
    return result


def _summary(total: int, state: dict[str, int], skipped: list[Skipped]) -> str:
    """``"imported 1 of 4, 3 skipped (3 listed in the manifest but not found ...)"``: what the
    job view shows next to the job's status."""
    parts = [f"imported {state['imported']} of {total}"]
    if state["duplicates"]:
        parts.append(f"{state['duplicates']} already in the collection")
    if state["failed"]:
        parts.append(f"{state['failed']} failed")
    if skipped:
        reasons = Counter(item.reason for item in skipped)
        parts.append(f"{len(skipped)} skipped (" + "; ".join(f"{n} {reason}" for reason, n in reasons.most_common()) + ")")
    return ", ".join(parts)


def _import(ctx: JobContext, params: ImportParams) -> dict[str, Any]:
    if ctx.collection_id is None:
        raise JobFailed("an import job needs a collection")
    try:
        listing = list_source(params.path, params.manifest, upload_index=params.upload_index)
    except ImportSourceError as exc:
        raise JobFailed(str(exc)) from exc
    entries = [entry for entry in listing.entries if entry.is_image]
    skipped = listing.skipped + [Skipped(entry.rel_path, NON_IMAGE_REASON) for entry in listing.entries if not entry.is_image]
    total = len(entries) + len(skipped)
    state = {name: int(ctx.state.get(name, 0)) for name in COUNTERS}
    state["skipped_non_image"] = len(listing.entries) - len(entries)
    state["missing"] = len(listing.missing)
    failures: list[dict[str, str]] = list(ctx.state.get("failures", []))
    position = int(ctx.state.get("cursor", 0))
    ctx.set_progress(len(skipped) + position, total)
    collection_id = ctx.collection_id
    blobs = ctx.runtime.blobs
    while position < len(entries):
        ctx.check()
        batch = entries[position : position + ctx.chunk_size]
        read = [(entry, *_read(entry, collection_id)) for entry in batch]
        with ctx.session() as session:
            known = set(session.scalars(select(Image.sha256).where(Image.collection_id == collection_id,
                                                                   Image.sha256.in_([row["sha256"] for _e, _d, row in read]))))
        prepared: list[tuple[Entry, dict[str, Any]]] = []
        for entry, data, row in read:
            if row["sha256"] in known:
                state["duplicates"] += 1
                continue
            known.add(row["sha256"])
            prepared.append((entry, row if data is None else _decode_and_store(entry, data, row, blobs)))
        position += len(batch)
        with ctx.chunk(done=len(skipped) + position, state={}) as session:
            tag_names = {tag for entry, row in prepared if row["status"] == "ok" for tag in entry.tags}
            category_ids = get_or_create_categories(session, collection_id, sorted(tag_names))
            inserted = insert_images_detailed(session, [row for _entry, row in prepared])
            pairs: list[tuple[int, int]] = []
            for (entry, row), image_id, created in zip(prepared, inserted.ids, inserted.created, strict=True):
                if not created:
                    state["duplicates"] += 1
                    continue
                if row["status"] == "failed":
                    state["failed"] += 1
                    if len(failures) < MAX_REPORTED:
                        failures.append({"file": entry.rel_path, "reason": str(row["failure_reason"])})
                    continue
                state["imported"] += 1
                pairs.extend((image_id, category_ids[tag]) for tag in entry.tags)
            insert_image_tags(session, pairs)
            # written by ctx.chunk together with this chunk's rows
            ctx.state.update({**state, "cursor": position, "failures": failures})
    summary = _summary(total, state, skipped)
    result = {**state, "failures": failures, "missing_files": listing.missing[:MAX_REPORTED], "total_files": total,
              "skipped": [item.to_dict() for item in skipped[:MAX_REPORTED]], "skipped_count": len(skipped), "summary": summary}
    if state["imported"] == 0 and state["duplicates"] == 0:
        with ctx.chunk(done=total, state=result):
            pass
        if total == 0:
            raise JobFailed("nothing to import: the upload or folder holds no files")
        raise JobFailed(f"nothing could be imported: {summary}")
    return result
