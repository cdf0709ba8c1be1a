"""Leases, claims, the watchdog, cancel and transient-error handling (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from tests.worker.helpers import detached_job
from worker.jobs import registry
from worker.queue import lease, watchdog
from worker.queue.context import JobContext
from worker.queue.execution import execute
from worker.queue.submit import request_cancel, submit
from worker.store.models import Collection, Job, JobStatus
from worker.store.models.base import utcnow


def _job(runtime, status: JobStatus = JobStatus.queued, **values) -> int:  # type: ignore[no-untyped-def]
    with runtime.sessions() as session:
        collection = Collection(name=f"c{utcnow().timestamp()}")
        session.add(collection)
        session.commit()
        job = submit(session, kind="export", collection_id=collection.id, params={"format": "coco"}, inline=True)
        if status is not JobStatus.queued or values:
            session.execute(update(Job).where(Job.id == job.id).values(status=status, **values))
            session.commit()
        return job.id




def test_only_one_worker_claims_a_job_until_its_lease_expires(runtime) -> None:  # type: ignore[no-untyped-def]
    job_id = _job(runtime)
    assert lease.claim(runtime.sessions, job_id, "a", 30)
    assert not lease.claim(runtime.sessions, job_id, "b", 30)
    assert detached_job(runtime, job_id).worker_id == "a"
    with runtime.sessions() as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=60)))
        session.commit()
    assert lease.claim(runtime.sessions, job_id, "b", 30)
    row = detached_job(runtime, job_id)
    assert row.worker_id == "b" and row.attempts == 2
    # the old owner can no longer renew or write progress
    with runtime.sessions() as session:
        assert not lease.renew(session, job_id, "a")
    ctx = JobContext(runtime=runtime, job_id=job_id, kind=row.kind, collection_id=row.collection_id, params={}, worker_id="a",
                     device="cpu", chunk_size=2, done=0, total=None)
    with pytest.raises(lease.LeaseLost), ctx.chunk(done=2, state={"cursor": 9}):
        pass
    with pytest.raises(lease.LeaseLost):
        ctx.check()
    assert detached_job(runtime, job_id).done == 0


def test_watchdog_requeues_expired_jobs_and_finishes_cancelled_ones(runtime) -> None:  # type: ignore[no-untyped-def]
    old = utcnow() - timedelta(seconds=600)
    stale = _job(runtime, JobStatus.running, worker_id="dead", heartbeat_at=old, celery_task_id="t0")
    fresh = _job(runtime, JobStatus.running, worker_id="alive", heartbeat_at=utcnow())
    stale_cancelled = _job(runtime, JobStatus.running, worker_id="dead", heartbeat_at=old, cancel_requested=True)
    assert watchdog.sweep() == [stale]
    row = detached_job(runtime, stale)
    assert row.status is JobStatus.queued and row.worker_id is None and row.celery_task_id not in (None, "t0")
    assert detached_job(runtime, fresh).status is JobStatus.running
    assert detached_job(runtime, stale_cancelled).status is JobStatus.cancelled
    assert watchdog.sweep() == []


def test_watchdog_resends_jobs_left_queued(runtime) -> None:  # type: ignore[no-untyped-def]
    """A queued job whose message was lost (e.g. Redis restarted empty) gets its message again."""
    old = utcnow() - timedelta(seconds=2000)
    lost = _job(runtime, created_at=old, celery_task_id="t0")
    recent = _job(runtime)
    assert watchdog.sweep() == [lost]
    row = detached_job(runtime, lost)
    assert row.status is JobStatus.queued and row.celery_task_id != "t0" and row.heartbeat_at is not None
    assert detached_job(runtime, recent).heartbeat_at is None  # a fresh queued job is left alone
    assert watchdog.sweep() == []  # not again until another CAMLABEL_REQUEUE_QUEUED_S has passed
    # a claim still works on the re-sent job
    assert lease.claim(runtime.sessions, lost, "w", 30)


def test_request_cancel(runtime) -> None:  # type: ignore[no-untyped-def]
    queued = _job(runtime)
    running = _job(runtime, JobStatus.running, worker_id="w", heartbeat_at=utcnow())
    finished = _job(runtime, JobStatus.succeeded)
    with runtime.sessions() as session:
        assert request_cancel(session, queued).status is JobStatus.cancelled
        job = request_cancel(session, running)
        assert job.status is JobStatus.running and job.cancel_requested
        assert request_cancel(session, finished).status is JobStatus.succeeded
        with pytest.raises(LookupError, match="does not exist"):
            request_cancel(session, 12345)
    assert execute(queued) == "already cancelled"
    assert execute(12345) == "missing"


def test_transient_errors_release_the_job_for_a_retry(runtime, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    job_id = _job(runtime)

    def flaky(ctx: JobContext) -> None:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(registry, "handler_for", lambda kind: flaky)
    with pytest.raises(OperationalError):
        execute(job_id)
    row = detached_job(runtime, job_id)
    assert row.status is JobStatus.queued and row.worker_id is None and row.attempts == 1

    def broken(ctx: JobContext) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(registry, "handler_for", lambda kind: broken)
    assert execute(job_id) == "failed"
    row = detached_job(runtime, job_id)
    assert row.status is JobStatus.failed and row.error == "RuntimeError: boom" and row.finished_at is not None


def test_submit_refuses_unknown_kinds_and_collections(runtime) -> None:  # type: ignore[no-untyped-def]
    with runtime.sessions() as session:
        with pytest.raises(ValueError, match="unknown job kind"):
            submit(session, kind="paint", collection_id=None, params={}, inline=True)
        with pytest.raises(ValueError, match="collection 999 does not exist"):
            submit(session, kind="import", collection_id=999, params={}, inline=True)
