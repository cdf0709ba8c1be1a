"""Staged uploads: an import job deletes its staging folder once it ends (succeeded, failed,
cancelled), keeps it while the job can still resume, never deletes a path given by hand, and
``sweep_staging`` clears abandoned folders."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from tests.worker.helpers import detached_job, new_collection
from worker.jobs import importing
from worker.queue.execution import execute
from worker.queue.submit import request_cancel, submit
from worker.staging import STAGING_MIN_AGE_S, remove_staging, staging_root, sweep_staging
from worker.store.models import Image, ImageStatus, JobStatus


def _stage(runtime, shared_dataset: Path, n: int = 3, name: str = "upload1") -> Path:  # type: ignore[no-untyped-def]
    """``<data_dir>/staging/<name>/files/raccoon/*.jpg``: ``n`` real photos, like the web stages them."""
    folder = staging_root(runtime.settings.data_dir) / name
    target = folder / "files" / "raccoon"
    target.mkdir(parents=True)
    for photo in sorted((shared_dataset / "raccoon" / "images").glob("*.jpg"))[:n]:
        shutil.copy2(photo, target / photo.name)
    return folder


def _submit(runtime, collection_id: int, folder: Path, path: Path | None = None) -> int:  # type: ignore[no-untyped-def]
    with runtime.sessions() as session:
        job = submit(session, kind="import", collection_id=collection_id, inline=True,
                     params={"path": str(path or folder / "files"), "staging": str(folder)})
        return job.id




def test_succeeded_import_removes_its_staging_folder_and_keeps_the_images(runtime, shared_dataset: Path) -> None:  # type: ignore[no-untyped-def]
    collection_id = new_collection(runtime)
    folder = _stage(runtime, shared_dataset)
    job_id = _submit(runtime, collection_id, folder)
    assert execute(job_id) == "succeeded"
    assert detached_job(runtime, job_id).result["imported"] == 3
    assert not folder.exists() and staging_root(runtime.settings.data_dir).is_dir()
    with runtime.sessions() as session:
        images = session.scalars(select(Image)).all()
    assert len(images) == 3 and all(i.status is ImageStatus.ok for i in images)
    for image in images:  # the blob store holds the originals and thumbnails
        assert runtime.blobs.local_path(image.storage_key).is_file() and runtime.blobs.local_path(image.thumb_key).is_file()


def test_failed_import_removes_its_staging_folder(sqlite_runtime) -> None:  # type: ignore[no-untyped-def]
    collection_id = new_collection(sqlite_runtime)
    folder = staging_root(sqlite_runtime.settings.data_dir) / "upload2"
    folder.mkdir(parents=True)
    (folder / "upload.zip").write_bytes(b"not a zip archive")
    job_id = _submit(sqlite_runtime, collection_id, folder, path=folder / "upload.zip")
    assert execute(job_id) == "failed"
    assert "neither a folder nor a .zip" in detached_job(sqlite_runtime, job_id).error
    assert not folder.exists()


def test_import_cancelled_while_running_removes_its_staging_folder(sqlite_runtime, shared_dataset: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CAMLABEL_CHUNK_SIZE", "1")
    collection_id = new_collection(sqlite_runtime)
    folder = _stage(sqlite_runtime, shared_dataset)
    job_id = _submit(sqlite_runtime, collection_id, folder)
    store = importing._decode_and_store

    def store_then_cancel(*args, **kwargs):  # type: ignore[no-untyped-def]
        """A user presses cancel while the first image is being stored."""
        with sqlite_runtime.sessions() as session:
            request_cancel(session, job_id)
        return store(*args, **kwargs)

    monkeypatch.setattr(importing, "_decode_and_store", store_then_cancel)
    assert execute(job_id) == "cancelled"
    job = detached_job(sqlite_runtime, job_id)
    assert job.status is JobStatus.cancelled and job.result["imported"] == 1  # the finished chunk stays
    assert not folder.exists()


def test_staging_folder_stays_while_the_job_can_resume(sqlite_runtime, shared_dataset: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    collection_id = new_collection(sqlite_runtime)
    folder = _stage(sqlite_runtime, shared_dataset)
    job_id = _submit(sqlite_runtime, collection_id, folder)
    store = importing._decode_and_store

    def database_gone(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT ...", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(importing, "_decode_and_store", database_gone)
    with pytest.raises(OperationalError):  # transient: Celery retries the task
        execute(job_id)
    assert detached_job(sqlite_runtime, job_id).status is JobStatus.queued
    assert (folder / "files" / "raccoon").is_dir()
    monkeypatch.setattr(importing, "_decode_and_store", store)
    assert execute(job_id) == "succeeded"  # the retry reads the files, then removes them
    assert not folder.exists()


def test_cancel_while_queued_deletes_the_upload_the_sweep_takes_orphans_and_hand_given_paths_stay(sqlite_runtime, shared_dataset: Path,  # type: ignore[no-untyped-def]
                                                                                                   tmp_path: Path) -> None:
    runtime = sqlite_runtime
    data_dir = runtime.settings.data_dir
    collection_id = new_collection(runtime)
    queued = _stage(runtime, shared_dataset, name="queued")
    cancelled = _stage(runtime, shared_dataset, name="cancelled")
    orphan = _stage(runtime, shared_dataset, name="orphan")
    young = _stage(runtime, shared_dataset, name="young")
    _submit(runtime, collection_id, queued)
    cancelled_id = _submit(runtime, collection_id, cancelled)
    with runtime.sessions() as session:
        request_cancel(session, cancelled_id)
    assert not cancelled.exists()  # no handler will run for it: the cancel deletes the upload
    hour_ago = time.time() - 2 * STAGING_MIN_AGE_S
    for folder in (queued, orphan):
        os.utime(folder, (hour_ago, hour_ago))
    with runtime.sessions() as session:
        removed = sweep_staging(session, data_dir)
    assert [p.name for p in removed] == ["orphan"]
    assert queued.is_dir() and young.is_dir() and not orphan.exists()

    own = tmp_path / "my-photos"
    (own / "raccoon").mkdir(parents=True)
    photo = sorted((shared_dataset / "raccoon" / "images").glob("*.jpg"))[-1]
    shutil.copy2(photo, own / "raccoon" / photo.name)
    assert not remove_staging(data_dir, own) and own.is_dir()  # outside <data_dir>/staging: refused
    with runtime.sessions() as session:
        job = submit(session, kind="import", collection_id=collection_id, inline=True, params={"path": str(own), "staging": str(own)})
    assert execute(job.id) == "succeeded" and detached_job(runtime, job.id).result["imported"] == 1
    assert (own / "raccoon" / photo.name).is_file()  # a path given by hand is never deleted
