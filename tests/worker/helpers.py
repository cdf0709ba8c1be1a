"""Helpers of the worker tests: rows made in a runtime's database, small real JPEGs, an import job run in-process."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image as PILImage

from worker.queue.execution import execute
from worker.queue.submit import submit
from worker.store.models import Collection, Job


def new_collection(runtime, name: str = "c") -> int:  # type: ignore[no-untyped-def]
    """Id of a new empty collection in ``runtime``'s database."""
    with runtime.sessions() as session:
        collection = Collection(name=name)
        session.add(collection)
        session.commit()
        return collection.id


def detached_job(runtime, job_id: int):  # type: ignore[no-untyped-def]
    """The ``Job`` row ``job_id`` as it is now, detached from its session."""
    with runtime.sessions() as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def jpeg_bytes(color: tuple[int, int, int], size: tuple[int, int] = (48, 32), exif_orientation: int | None = None) -> bytes:
    """A one-colour JPEG of ``size`` (width, height) pixels, with an EXIF orientation tag when given."""
    image = PILImage.new("RGB", size, color)
    buffer = io.BytesIO()
    if exif_orientation is None:
        image.save(buffer, format="JPEG")
    else:
        exif = PILImage.Exif()
        exif[0x0112] = exif_orientation
        image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def run_import(runtime, path: Path, manifest: Path | None = None, collection_id: int | None = None) -> Job:  # type: ignore[no-untyped-def]
    """Submit an import of ``path`` (into ``collection_id``, else a new collection), run it in this
    process and return its finished ``Job`` row, detached."""
    with runtime.sessions() as session:
        job = submit(session, kind="import", collection_id=collection_id if collection_id is not None else new_collection(runtime),
                     inline=True, params={"path": str(path), "manifest": str(manifest) if manifest else None})
    execute(job.id)
    return detached_job(runtime, job.id)
