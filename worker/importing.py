"""The import job: files from a folder, .zip or manifest into images, thumbnails and tags.

Params: ``path`` (folder or .zip the worker can read), optional ``manifest`` (CSV path).
For each entry, in the source's fixed order, in chunks of ``ctx.chunk_size`` files:

- non-image files (by extension) are skipped and counted (``skipped_non_image``);
- the bytes are hashed (SHA-256); a file the collection already holds is a ``duplicate``;
- the image is decoded with :func:`camcore.images.load_image` (EXIF applied: ``width``/
  ``height`` are displayed pixels); a file that fails, or a truncated JPEG, becomes an image
  row with ``status=failed`` and its reason, and the import goes on;
- the original goes to blobs kind ``images``, a JPEG thumbnail (longest side
  :data:`THUMB_SIZE` px) to ``thumbs``; tags become categories of the collection.

Each chunk's rows and the job's cursor are committed together, so a resumed import starts at
the first unfinished chunk, and re-imports never duplicate (``(collection, sha256)`` is unique).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import PurePosixPath
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import select

from worker.categories import ensure_categories
from worker.execution import JobContext, JobFailed
from worker.import_sources import Entry, ImportSourceError, list_source
from worker.store.bulk import insert_image_tags, insert_images_detailed
from worker.store.models import Image

THUMB_SIZE = 256
COUNTERS = ("imported", "duplicates", "failed", "skipped_non_image")
MAX_REPORTED = 50


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


def run_import_job(ctx: JobContext) -> dict[str, Any]:
    """Handler of ``import`` jobs (see the module docstring)."""
    path = ctx.params.get("path")
    if not path or ctx.collection_id is None:
        raise JobFailed("an import job needs a collection and a 'path'")
    try:
        listing = list_source(path, ctx.params.get("manifest"))
    except ImportSourceError as exc:
        raise JobFailed(str(exc)) from exc
    entries = listing.entries
    state = {name: int(ctx.state.get(name, 0)) for name in COUNTERS}
    state["missing"] = len(listing.missing)
    failures: list[dict[str, str]] = list(ctx.state.get("failures", []))
    if not ctx.state:
        ctx.set_progress(0, len(entries))
    else:
        ctx.set_progress(ctx.done, len(entries))
    collection_id = ctx.collection_id
    blobs = ctx.runtime.blobs
    position = int(ctx.state.get("cursor", 0))
    while position < len(entries):
        ctx.check()
        batch = entries[position : position + ctx.chunk_size]
        images = [entry for entry in batch if entry.is_image]
        state["skipped_non_image"] += len(batch) - len(images)
        read = [(entry, *_read(entry, collection_id)) for entry in images]
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
        with ctx.chunk(done=position, state={}) as session:
            tag_names = {tag for entry, row in prepared if row["status"] == "ok" for tag in entry.tags}
            category_ids = ensure_categories(session, collection_id, tag_names)
            result = insert_images_detailed(session, [row for _entry, row in prepared])
            pairs = []
            for (entry, row), image_id, created in zip(prepared, result.ids, result.created):
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
    return {**state, "failures": failures, "missing_files": listing.missing[:MAX_REPORTED], "total_files": len(entries)}
