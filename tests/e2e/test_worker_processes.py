"""Real ``camlabel worker`` processes on Redis + PostgreSQL: the pipeline, cancel, and SIGKILL resume."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.e2e.processes import Cli, Workers, expected_box_counts, job_row, wait_for
from tests.prerequisites import copy_photos
from worker.queue.submit import request_cancel
from worker.store.models import (
    Box,
    BoxSource,
    ConceptMap,
    Image,
    ImageStatus,
    Job,
    JobStatus,
    ModelVersion,
    ReviewStatus,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def _per_image(db_sessions, model: type, model_version_id: int) -> Counter[int]:  # type: ignore[no-untyped-def]
    clause = [model.model_version_id == model_version_id]
    if model is Box:
        clause += [Box.source == BoxSource.cam, Box.status == ReviewStatus.proposed]
    with db_sessions() as session:
        return Counter(dict(session.execute(select(model.image_id, func.count()).where(*clause).group_by(model.image_id)).all()))


def test_import_train_infer_export_through_cpu_and_gpu_workers(cli: Cli, workers: Workers, db_sessions,  # type: ignore[no-untyped-def]
    photos: Path, tmp_path: Path) -> None:
    cpu_worker = workers.start(queues="cpu")
    cli("collections", "create", "rk")
    imported = cli("import", "rk", str(photos))
    assert "imported 8," in imported.stdout
    train_id = int(cli("train", "rk", "--arch", "tiny_cnn", "--input-size", "128", "--epochs", "20").stdout.strip().splitlines()[-1])
    time.sleep(3)
    assert job_row(db_sessions, train_id).status is JobStatus.queued  # the idle cpu-only worker leaves a gpu job alone
    gpu_worker = workers.start(queues="gpu")
    trained = wait_for(lambda: (j := job_row(db_sessions, train_id)).status.finished and j, 180, "the train job on the gpu worker")
    assert trained.status is JobStatus.succeeded, trained.error
    version_id = trained.result["model_version_id"]
    cli("infer", "rk", "--wait")
    out = tmp_path / "coco.json"
    cli("export", "rk", "--format", "coco", "--status", "all", "--include-unreviewed", "-o", str(out))

    jobs = json.loads(cli("jobs", "rk", "--json").stdout)
    assert [j["kind"] for j in jobs] == ["import", "train", "infer", "export"]
    assert all(j["status"] == "succeeded" and j["error"] is None and j["done"] == j["total"] for j in jobs), jobs
    assert set(jobs[0]) == {"id", "kind", "status", "done", "total", "error"}

    with db_sessions() as session:
        version = session.get(ModelVersion, version_id)
        assert version is not None and version.class_names == ["kangaroo", "raccoon"] and version.checkpoint_key
        image_ids = session.scalars(select(Image.id).where(Image.status == ImageStatus.ok)).all()
    assert len(image_ids) == 8
    maps = _per_image(db_sessions, ConceptMap, version_id)
    boxes = _per_image(db_sessions, Box, version_id)
    # every image is tagged with one of the model's classes: one map each, and the boxes that map gives
    assert maps == Counter({i: 1 for i in image_ids})
    with db_sessions() as session:
        stored = session.execute(select(ConceptMap.raw_key, ConceptMap.overlay_key).where(ConceptMap.model_version_id == version_id)).all()
    assert all(raw.startswith("maps/") and overlay is None for raw, overlay in stored)  # one float16 map blob each, no PNG
    assert not (Path(cli.env["CAMLABEL_DATA_DIR"]) / "blobs" / "overlays").exists()
    infer = next(j for j in jobs if j["kind"] == "infer")
    with db_sessions() as session:
        box_params = session.get(Job, infer["id"]).result["box_params"]
    assert boxes == expected_box_counts(db_sessions, Path(cli.env["CAMLABEL_DATA_DIR"]) / "blobs", version_id, box_params)
    assert sum(boxes.values()) >= 8

    from pycocotools.coco import COCO

    coco = COCO(str(out))
    assert len(coco.getImgIds()) == 8
    assert len(coco.getAnnIds()) == sum(boxes.values())
    cpu_log, gpu_log = (workers.logs / "worker-0.log").read_text(), (workers.logs / "worker-1.log").read_text()
    with db_sessions() as session:
        task_ids = {job.kind.value: job.celery_task_id for job in session.scalars(select(Job))}
    ran = {kind: [f"camlabel.run_job[{task_id}]" in log for log in (cpu_log, gpu_log)] for kind, task_id in task_ids.items()}
    assert ran == {"import": [True, False], "train": [False, True], "infer": [False, True], "export": [True, False]}
    assert cpu_worker.poll() is None and gpu_worker.poll() is None


def _start_infer(cli: Cli) -> int:
    """Queue an ImageNet-classifier infer job (slow enough on a CPU to act on mid-way); its id."""
    done = cli("infer", "rk", "--model", "imagenet")
    return int(done.stdout.strip().splitlines()[-1])


def test_cancel_a_queued_and_a_running_job(cli: Cli, workers: Workers, db_sessions,  # type: ignore[no-untyped-def]
    shared_dataset: Path, tmp_path: Path) -> None:
    photos = copy_photos(shared_dataset, tmp_path / "photos", 150)  # 150 chunks of 2: still running when cancelled
    cli("collections", "create", "rk")
    workers.start()
    cli("import", "rk", str(photos))
    infer_id = _start_infer(cli)
    queued_id = _start_infer(cli)  # the solo worker is busy: this one waits in Redis
    wait_for(lambda: job_row(db_sessions, infer_id).done >= 2, 240, "the infer job to finish its first chunk")
    assert job_row(db_sessions, queued_id).status is JobStatus.queued

    with db_sessions() as session:  # the API's call (instant, so the running job cannot finish first)
        assert request_cancel(session, queued_id).status is JobStatus.cancelled
    requested = cli("jobs", "cancel", str(infer_id))  # next: each CLI start is time the running job goes on
    assert "cancel requested" in requested.stdout
    assert f"job {queued_id}: cancelled" in cli("jobs", "cancel", str(queued_id)).stdout  # cancelling again says so

    job = wait_for(lambda: (j := job_row(db_sessions, infer_id)).status.finished and j, 120, "the running job to stop")
    assert job.status is JobStatus.cancelled and job.error is None
    version_id = job.result["model_version_id"]
    with db_sessions() as session:
        ids = session.scalars(select(Image.id).where(Image.status == ImageStatus.ok).order_by(Image.id)).all()
    assert 2 <= job.done < job.total == len(ids)  # (the 100 photos may hold duplicates)
    # what it finished is kept: exactly the first `done` images have maps and boxes
    maps = _per_image(db_sessions, ConceptMap, version_id)
    assert set(maps) == set(ids[: job.done]) and set(maps.values()) == {1}
    # the worker then receives the cancelled job's message and leaves it alone
    queued_task = f"camlabel.run_job[{job_row(db_sessions, queued_id).celery_task_id}]"
    wait_for(lambda: queued_task in workers.log_text() and workers.log_text().count("received") >= 3, 60, "the second message")
    wait_for(lambda: "already cancelled" in workers.log_text(), 60, "the cancelled job's message to be dropped")
    final = job_row(db_sessions, queued_id)
    assert final.status is JobStatus.cancelled and final.done == 0 and final.started_at is None


def test_sigkill_mid_infer_resumes_on_a_new_worker_with_one_set_of_results(cli: Cli, workers: Workers, db_sessions,  # type: ignore[no-untyped-def]
    shared_dataset: Path, tmp_path: Path) -> None:
    # 40 photos: one loader streams the whole job, so it must still be running after its first chunk
    photos = copy_photos(shared_dataset, tmp_path / "forty", 20)
    cli("collections", "create", "rk")
    first = workers.start()
    cli("import", "rk", str(photos))
    job_id = _start_infer(cli)
    wait_for(lambda: job_row(db_sessions, job_id).done >= 2, 240, "the infer job to commit a chunk")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    at_kill = job_row(db_sessions, job_id)
    assert at_kill.status is JobStatus.running and at_kill.done < at_kill.total >= 38  # 40 photos, duplicates imported once

    second = workers.start()
    job = wait_for(lambda: (j := job_row(db_sessions, job_id)).status.finished and j, 300, "the job to resume and finish")
    assert job.status is JobStatus.succeeded, job.error
    assert job.done == job.total == at_kill.total
    assert job.attempts >= 2 and f":{second.pid}:" in (job.worker_id or "")
    assert "re-enqueued" in workers.log_text()

    version_id = job.result["model_version_id"]
    with db_sessions() as session:
        image_ids = session.scalars(select(Image.id).where(Image.status == ImageStatus.ok)).all()
    assert _per_image(db_sessions, ConceptMap, version_id) == Counter({i: 1 for i in image_ids}), "one map per image (top-1 class)"
    expected = expected_box_counts(db_sessions, Path(cli.env["CAMLABEL_DATA_DIR"]) / "blobs", version_id, job.result["box_params"])
    boxes_now = _per_image(db_sessions, Box, version_id)
    assert boxes_now == expected, "one set of proposals per image: what its stored map gives, never twice"
    assert sum(boxes_now.values()) == job.result["boxes"]
