"""The infer job streams its images through one loader: loader processes (forced on this CPU as a
GPU worker runs them) started once per job, tagged and untagged images in the same batches,
batches across chunk boundaries; it still commits chunk by chunk, resumes after a kill and
reports unreadable files on their image, with the results of the per-chunk path it replaces:
the same boxes, labels, order and failed images. An image's forward pass may run in another
batch than before (beside other images, or split at another place), which can move a float32
result by its last bit: box scores and the float16 maps are compared to that rounding.
"""

from __future__ import annotations

import multiprocessing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import delete, select, update
from torch.utils.data import DataLoader

import camcore.localizer
import camcore.streaming
from camcore.boxes import BoxParams
from camcore.concept_maps import decode_map, encode_map
from camcore.images import ImageLoadError
from camcore.localizer import Localizer
from tests.prerequisites import copy_photos
from tests.worker.helpers import detached_job
from worker.jobs import inferring
from worker.models_cache import load_model
from worker.queue.execution import execute
from worker.queue.submit import request_cancel, submit
from worker.store.models import (
    Box,
    BoxSource,
    Category,
    Collection,
    ConceptMap,
    Image,
    ImageStatus,
    ImageTag,
    Job,
    JobStatus,
    ModelVersion,
)
from worker.store.models.base import utcnow

CHUNK = 3  # the ``run`` fixture's CAMLABEL_CHUNK_SIZE
BATCH = 4  # batches straddle chunks


class _Killed(BaseException):
    """A worker process dying mid-job: nothing of the job's own error handling runs."""


@pytest.fixture
def prepared(run, shared_dataset: Path, tmp_path: Path, sqlite_runtime) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A collection of 10 real photos with a trained model: some images untagged (their predicted
    classes), one with both tags, one unreadable file and one image without a stored file."""
    run("collections", "create", "rk")
    run("import", "rk", str(copy_photos(shared_dataset, tmp_path / "photos", 5)))
    run("train", "rk", "--arch", "tiny_cnn", "--input-size", "96", "--epochs", "3", "--wait")
    with sqlite_runtime.sessions() as session:
        collection_id = session.scalars(select(Collection.id).where(Collection.name == "rk")).one()
        ids = list(session.scalars(select(Image.id).where(Image.collection_id == collection_id).order_by(Image.id)))
        categories = dict(session.execute(select(Category.name, Category.id).where(Category.collection_id == collection_id)).all())
        version_id = session.scalars(select(ModelVersion.id).where(ModelVersion.collection_id == collection_id)).one()
        session.execute(delete(ImageTag).where(ImageTag.image_id.in_([ids[1], ids[4], ids[5], ids[9]])))
        session.execute(delete(ImageTag).where(ImageTag.image_id == ids[2]))
        session.add_all([ImageTag(image_id=ids[2], category_id=categories["raccoon"]),
                         ImageTag(image_id=ids[2], category_id=categories["kangaroo"])])
        junk = sqlite_runtime.blobs.put_bytes(b"not an image at all", kind="images", suffix=".jpg")
        session.execute(update(Image).where(Image.id == ids[3]).values(storage_key=junk))
        session.execute(update(Image).where(Image.id == ids[7]).values(storage_key=None))
        session.commit()
    assert len(ids) == 10
    return {"collection_id": collection_id, "ids": ids, "version_id": version_id}


@pytest.fixture
def loaders(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, int]]:
    """Forces the infer job's loader to processes (2 of them), as on a CUDA worker, and records
    every DataLoader made: its sources and worker processes."""
    made: list[dict[str, int]] = []

    class CountedLoader(DataLoader):  # type: ignore[type-arg]
        def __init__(self, dataset: Any, *args: Any, **kwargs: Any) -> None:
            made.append({"sources": len(dataset), "workers": kwargs["num_workers"]})
            super().__init__(dataset, *args, **kwargs)

    monkeypatch.setattr(camcore.localizer, "loader_kind", lambda device: "processes")
    monkeypatch.setattr(camcore.localizer, "default_loader_workers", lambda: 2)
    monkeypatch.setattr(camcore.streaming, "DataLoader", CountedLoader)
    return made


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ``done`` count of every chunk the infer job writes, in order."""
    written: list[int] = []
    original = inferring._write_chunk

    def write(ctx, version_id, class_names, chunk, done, cursor, timings=None):  # type: ignore[no-untyped-def]
        written.append(done)
        return original(ctx, version_id, class_names, chunk, done, cursor, timings)

    monkeypatch.setattr(inferring, "_write_chunk", write)
    return written


def _infer(runtime, collection_id: int, top_k: int = 1) -> int:  # type: ignore[no-untyped-def]
    with runtime.sessions() as session:
        return submit(session, kind="infer", collection_id=collection_id, params={"batch_size": BATCH, "top_k": top_k}, inline=True).id


def _per_chunk(runtime, prepared: dict[str, Any], box_params: dict[str, Any], top_k: int = 1) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """What the per-chunk path computed: per chunk, the tagged images in one localize call and the
    untagged ones in another, each with the phased threads loader of its own."""
    with runtime.sessions() as session:
        version = session.get(ModelVersion, prepared["version_id"])
        session.expunge(version)
        keys = dict(session.execute(select(Image.id, Image.storage_key).where(Image.id.in_(prepared["ids"]))).all())
        tag_rows = session.execute(select(ImageTag.image_id, Category.name).join(Category, Category.id == ImageTag.category_id)).all()
    model, spec = load_model(version, runtime.blobs, "cpu")
    names = list(spec.class_names)
    tags: dict[int, set[int]] = {}
    for image_id, name in tag_rows:
        tags.setdefault(image_id, set()).add(names.index(name))
    localizer = Localizer(model, spec, params=BoxParams.from_dict(box_params), batch_size=BATCH, loader="threads")
    boxes: dict[int, list[tuple[Any, ...]]] = {}
    maps: dict[int, dict[str, str]] = {}
    failed: dict[int, str] = {}
    ids = prepared["ids"]
    for start in range(0, len(ids), CHUNK):
        chunk = []
        for image_id in ids[start:start + CHUNK]:
            if keys[image_id]:
                chunk.append(image_id)
            else:
                failed[image_id] = "the image has no stored file"
        tagged = [i for i in chunk if tags.get(i)]
        untagged = [i for i in chunk if not tags.get(i)]
        for group, wanted in ((tagged, [sorted(tags[i]) for i in tagged]), (untagged, None)):
            files = [runtime.blobs.local_path(keys[i]) for i in group]
            for position, outcome in localizer.localize_files(files, wanted, top_k=top_k):
                image_id = group[position]
                if isinstance(outcome, ImageLoadError):
                    failed[image_id] = outcome.reason
                    continue
                boxes[image_id] = [(names[label], *box, score) for box, score, label
                                   in zip(outcome.boxes.tolist(), outcome.scores.tolist(), outcome.labels.tolist(), strict=True)]
                maps[image_id] = {names[c]: decode_map(encode_map(cam)) for c, cam in outcome.maps.items()}  # as stored: float16
    localizer.close()
    return {"boxes": boxes, "maps": maps, "failed": failed}


def _stored(runtime, prepared: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The job's results as stored: proposals per image (in row order), maps, failed images."""
    with runtime.sessions() as session:
        boxes: dict[int, list[tuple[Any, ...]]] = {}
        for image_id, name, x1, y1, x2, y2, score in session.execute(
                select(Box.image_id, Category.name, Box.x1, Box.y1, Box.x2, Box.y2, Box.score).join(Category, Category.id == Box.category_id)
                .where(Box.source == BoxSource.cam, Box.model_version_id == prepared["version_id"]).order_by(Box.id)):
            boxes.setdefault(image_id, []).append((name, x1, y1, x2, y2, score))
        maps: dict[int, dict[str, str]] = {}
        for image_id, name, key in session.execute(select(ConceptMap.image_id, Category.name, ConceptMap.raw_key)
                                                   .join(Category, Category.id == ConceptMap.category_id)
                                                   .where(ConceptMap.model_version_id == prepared["version_id"]).order_by(ConceptMap.id)):
            assert name not in maps.setdefault(image_id, {}), "one map per image and class"
            maps[image_id][name] = decode_map(runtime.blobs.read_bytes(key))
        failed = dict(session.execute(select(Image.id, Image.failure_reason).where(Image.status == ImageStatus.failed)).all())
    return {"boxes": boxes, "maps": maps, "failed": failed}


def _assert_same_results(stored: dict[str, Any], expected: dict[str, Any]) -> None:
    """Same failed images with their reasons, same boxes (coordinates, labels, order) and maps per
    image; scores and maps equal up to the last bit of a float32 (a float16 step for the maps)."""
    assert stored["failed"] == expected["failed"]
    assert stored["boxes"].keys() == expected["boxes"].keys() and stored["maps"].keys() == expected["maps"].keys()
    for image_id, boxes in expected["boxes"].items():
        assert [b[:5] for b in stored["boxes"][image_id]] == [b[:5] for b in boxes], image_id
        assert [b[5] for b in stored["boxes"][image_id]] == pytest.approx([b[5] for b in boxes], rel=1e-5, abs=1e-7), image_id
    for image_id, maps in expected["maps"].items():
        assert list(stored["maps"][image_id]) == list(maps), image_id  # the same classes, in order
        for name, cam in maps.items():
            assert torch.allclose(stored["maps"][image_id][name].float(), cam.float(), rtol=2**-10, atol=1e-7), (image_id, name)


@pytest.mark.slow  # trains a small model, starts loader processes
def test_infer_job_streams_through_one_loader_with_the_per_chunk_results(prepared, loaders, commits,  # type: ignore[no-untyped-def]
                                                                         sqlite_runtime) -> None:
    job_id = _infer(sqlite_runtime, prepared["collection_id"], top_k=2)  # untagged images: both classes, by score
    assert execute(job_id, worker_id="a") == "succeeded"
    job = detached_job(sqlite_runtime, job_id)
    assert loaders == [{"sources": 9, "workers": 2}]  # one loader for the job's 9 stored files, both processes
    assert multiprocessing.active_children() == []  # and it stopped with the job
    assert commits == [3, 6, 9, 10]  # chunk by chunk
    assert (job.done, job.total, job.result["images_failed"]) == (10, 10, 2)

    stored = _stored(sqlite_runtime, prepared)
    expected = _per_chunk(sqlite_runtime, prepared, job.result["box_params"], top_k=2)
    ids = prepared["ids"]
    _assert_same_results(stored, expected)
    assert set(stored["failed"]) == {ids[3], ids[7]} and stored["failed"][ids[7]] == "the image has no stored file"
    assert "not a recognised image format" in stored["failed"][ids[3]]
    assert set(stored["maps"]) == set(ids) - {ids[3], ids[7]}
    assert sorted(stored["maps"][ids[2]]) == ["kangaroo", "raccoon"]  # both tags: both maps
    assert [len(stored["maps"][i]) for i in (ids[0], ids[1], ids[4])] == [1, 2, 2]  # one tag; untagged: top 2
    assert sum(len(b) for b in stored["boxes"].values()) == job.result["boxes"] >= 8


@pytest.mark.slow  # trains a small model, starts loader processes
def test_infer_job_killed_after_a_chunk_resumes_on_another_worker_with_one_set_of_results(  # type: ignore[no-untyped-def]
        prepared, loaders, commits, sqlite_runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    writing = inferring._write_chunk

    def die_on_second_chunk(*args, **kwargs):  # type: ignore[no-untyped-def]
        if len(commits) == 1:  # the first chunk is committed, the second is not
            raise _Killed
        return writing(*args, **kwargs)

    monkeypatch.setattr(inferring, "_write_chunk", die_on_second_chunk)
    job_id = _infer(sqlite_runtime, prepared["collection_id"])
    with pytest.raises(_Killed):
        execute(job_id, worker_id="a")
    killed = detached_job(sqlite_runtime, job_id)
    assert (killed.status, killed.worker_id, killed.done, killed.result["cursor"]) == (JobStatus.running, "a", 3, prepared["ids"][2])
    assert multiprocessing.active_children() == []  # the dying job still stopped its loader processes
    assert loaders == [{"sources": 9, "workers": 2}]

    monkeypatch.setattr(inferring, "_write_chunk", writing)
    with sqlite_runtime.sessions() as session:  # worker "a" is gone: its lease runs out
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=3600)))
        session.commit()
    assert execute(job_id, worker_id="b") == "succeeded"
    job = detached_job(sqlite_runtime, job_id)
    assert loaders[1:] == [{"sources": 6, "workers": 2}]  # one loader again, for the 7 images after the cursor (one without a file)
    assert (job.done, job.total, job.result["images_failed"], job.attempts) == (10, 10, 2, 2)

    stored = _stored(sqlite_runtime, prepared)
    expected = _per_chunk(sqlite_runtime, prepared, job.result["box_params"])
    _assert_same_results(stored, expected)
    assert sum(len(b) for b in stored["boxes"].values()) == job.result["boxes"]


@pytest.mark.slow  # trains a small model, starts loader processes
def test_cancelled_infer_job_keeps_its_committed_chunks_and_stops_its_loader(prepared, loaders, commits,  # type: ignore[no-untyped-def]
                                                                             sqlite_runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    writing = inferring._write_chunk
    job_id = _infer(sqlite_runtime, prepared["collection_id"])

    def cancel_after_first_chunk(*args, **kwargs):  # type: ignore[no-untyped-def]
        written = writing(*args, **kwargs)
        with sqlite_runtime.sessions() as session:
            request_cancel(session, job_id)
        return written

    monkeypatch.setattr(inferring, "_write_chunk", cancel_after_first_chunk)
    assert execute(job_id, worker_id="a") == "cancelled"
    job = detached_job(sqlite_runtime, job_id)
    assert multiprocessing.active_children() == [] and len(loaders) == 1
    # the chunk computed before the cancel was seen is still committed, as before
    assert (job.status, job.done, job.result["cursor"]) == (JobStatus.cancelled, 6, prepared["ids"][5])
    assert set(_stored(sqlite_runtime, prepared)["maps"]) == set(prepared["ids"][:6]) - {prepared["ids"][3]}


@pytest.mark.slow  # trains a small model, starts loader processes
def test_images_imported_while_the_infer_job_runs_get_a_pass_of_their_own(prepared, loaders, commits,  # type: ignore[no-untyped-def]
                                                                          sqlite_runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    writing = inferring._write_chunk
    added: list[int] = []

    def import_one_during_the_first_chunk(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not added:
            with sqlite_runtime.sessions() as session:
                first = session.get(Image, prepared["ids"][0])
                late = Image(collection_id=prepared["collection_id"], sha256="0" * 64, rel_path="late.jpg", storage_key=first.storage_key)
                session.add(late)
                session.commit()
                added.append(late.id)
        return writing(*args, **kwargs)

    monkeypatch.setattr(inferring, "_write_chunk", import_one_during_the_first_chunk)
    job_id = _infer(sqlite_runtime, prepared["collection_id"])
    assert execute(job_id, worker_id="a") == "succeeded"
    job = detached_job(sqlite_runtime, job_id)
    assert loaders == [{"sources": 9, "workers": 2}, {"sources": 1, "workers": 1}]  # the listed images, then the late one
    assert commits == [3, 6, 9, 10, 11]
    assert (job.done, job.total, job.result["cursor"]) == (11, 11, added[0])
    stored = _stored(sqlite_runtime, prepared)
    assert len(stored["maps"][added[0]]) == 1 and added[0] not in stored["failed"]  # untagged: its predicted class
