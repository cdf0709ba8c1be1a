"""Celery settings, routing, device choice, and the embedded in-process worker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from worker.config import Settings
from worker.device import select_device
from worker.queue.app import celery_config, queue_for
from worker.store.models import JobKind


def test_long_task_settings_and_queues(tmp_path: Path) -> None:
    redis = celery_config(Settings(data_dir=tmp_path, database_url="sqlite://", redis_url="redis://127.0.0.1:6379/3"))
    assert redis["broker_url"] == redis["result_backend"] == "redis://127.0.0.1:6379/3"
    assert redis["task_acks_late"] and redis["task_reject_on_worker_lost"] and redis["worker_prefetch_multiplier"] == 1
    assert redis["broker_transport_options"]["visibility_timeout"] >= 3600
    assert {q.name for q in redis["task_queues"]} >= {"gpu", "cpu"}
    embedded = celery_config(Settings(data_dir=tmp_path, database_url="sqlite://", redis_url=None))
    assert embedded["broker_url"] == "memory://"


def test_routing_defaults_and_env_override() -> None:
    assert [queue_for(k, {}) for k in (JobKind.train, JobKind.infer)] == ["gpu", "gpu"]
    assert {queue_for(k, {}) for k in (JobKind.import_, JobKind.export, JobKind.evaluate, JobKind.calibrate)} == {"cpu"}
    assert queue_for("infer", {"CAMLABEL_QUEUE_INFER": "big-gpu"}) == "big-gpu"


def test_one_task_runs_every_job_kind() -> None:
    """The worker knows one camlabel task; the queue is chosen per message, so no router is configured."""
    import worker.queue.task  # noqa: F401 - registers the task, as the worker's include does
    from worker.queue.app import RUN_JOB, celery

    assert {name for name in celery.tasks if name.startswith("camlabel.")} == {RUN_JOB}
    assert not celery.conf.task_routes


def test_device_selection() -> None:
    import torch

    assert select_device({}) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert select_device({"CAMLABEL_DEVICE": "cpu"}) == "cpu"
    with pytest.raises(ValueError, match="not a torch device"):
        select_device({"CAMLABEL_DEVICE": "toaster"})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            select_device({"CAMLABEL_DEVICE": "cuda"})


@pytest.mark.parametrize("visit_redis_first", [False, True], ids=["embedded", "after-redis"])
def test_embedded_worker_thread_runs_submitted_jobs(sqlite_runtime, photos: Path, redis_url: str,  # type: ignore[no-untyped-def]
                                                    visit_redis_first: bool) -> None:
    """No Redis: ``submit`` (not inline) hands the job to the in-process Celery worker thread, also
    after the process-wide app was pointed at Redis and back (the old broker's pools are dropped,
    not left closed in kombu's registry)."""
    from worker.queue.app import celery, configure_celery
    from worker.queue.embedded import ensure_worker, stop_worker
    from worker.queue.submit import submit
    from worker.store.models import Collection, Job, JobStatus

    if visit_redis_first:
        configure_celery(Settings(data_dir=sqlite_runtime.settings.data_dir, database_url=sqlite_runtime.settings.database_url,
                                  redis_url=redis_url))
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
        configure_celery(sqlite_runtime.settings)

    with sqlite_runtime.sessions() as session:
        collection = Collection(name="embedded")
        session.add(collection)
        session.commit()
        try:
            job = submit(session, kind="import", collection_id=collection.id, params={"path": str(photos)})
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with sqlite_runtime.sessions() as check:
                    row = check.get(Job, job.id)
                    if row.status.finished:
                        break
                time.sleep(0.2)
            assert ensure_worker() is not None
        finally:
            stop_worker()
    assert row.status is JobStatus.succeeded, row.error
    assert row.result["imported"] == 8


def test_embedded_message_sent_for_another_database_never_runs_here(tmp_path: Path) -> None:
    """After the process switches databases, a message it sent for the first one is dropped: its
    job id names a row of that database (here job 1 of the second stays queued)."""
    from worker.queue.send import send
    from worker.queue.task import run_job
    from worker.runtime import configure
    from worker.store.migrate import upgrade
    from worker.store.models import Collection, Job, JobStatus

    runtimes = []
    for name in ("first", "second"):
        url = f"sqlite:///{tmp_path / name}.db"
        upgrade(url)
        runtimes.append(configure(Settings(data_dir=tmp_path / name, database_url=url, redis_url=None)))
        with runtimes[-1].sessions() as session:
            collection = Collection(name=name)
            session.add(collection)
            session.flush()
            session.add(Job(collection_id=collection.id, kind=JobKind.export, status=JobStatus.queued, params={}))
            session.commit()
    first, second = runtimes
    send(1, "cpu", "sent-for-first", runtime=first)
    assert run_job.apply(args=[1], task_id="sent-for-first").result == "sent for another database"  # second is current
    with second.sessions() as session:
        job = session.get(Job, 1)
        assert job is not None and job.status is JobStatus.queued and job.attempts == 0
    send(1, "cpu", "sent-for-second", runtime=second)
    assert run_job.apply(args=[1], task_id="sent-for-second").result != "sent for another database"
    for runtime in runtimes:
        runtime.dispose()
