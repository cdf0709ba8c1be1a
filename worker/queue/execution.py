"""Running one job: claim it, keep its lease alive, hand it to its kind's handler, record the end.

Handlers get a :class:`JobContext`. They work in chunks: compute outside any transaction,
then write one chunk's results together with the job's progress in one transaction
(:meth:`JobContext.chunk`), fenced on this worker's lease. A chunk is therefore either
fully recorded, progress included, or not at all, and a resumed job starts at the first
unfinished chunk (its handler reads ``ctx.state``, the persisted cursor and counters).
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from worker.queue import lease
from worker.runtime import Runtime, get_runtime
from worker.store.db import session_scope
from worker.store.models import Job, JobKind, JobStatus
from worker.store.models.base import utcnow

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 64


def chunk_size() -> int:
    """Images per chunk (``CAMLABEL_CHUNK_SIZE``, default 64)."""
    value = int(os.environ.get("CAMLABEL_CHUNK_SIZE", DEFAULT_CHUNK_SIZE))
    if value < 1:
        raise ValueError(f"CAMLABEL_CHUNK_SIZE must be >= 1, got {value}")
    return value


class JobCancelled(Exception):
    """The job was asked to stop; it ends as ``cancelled`` keeping its committed chunks."""


class JobFailed(Exception):
    """A clear, user-facing reason the job cannot go on (bad input, missing model ...)."""


def is_transient(exc: BaseException) -> bool:
    """Errors worth a retry with backoff: lost database or broker connections."""
    if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return True
    try:
        import redis.exceptions as redis_exc
        from kombu.exceptions import OperationalError as KombuOperationalError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (redis_exc.ConnectionError, redis_exc.TimeoutError, KombuOperationalError))


@dataclass
class JobContext:
    """What a handler sees of its job. ``state`` is the persisted ``jobs.result`` (cursor, counters)."""

    runtime: Runtime
    job_id: int
    kind: JobKind
    collection_id: int | None
    params: dict[str, Any]
    worker_id: str
    device: str
    chunk_size: int
    done: int
    total: int | None
    state: dict[str, Any] = field(default_factory=dict)
    heartbeat: lease.Heartbeat | None = None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read/write session committed on exit (no progress attached)."""
        with session_scope(self.runtime.sessions) as session:
            yield session

    def check(self) -> None:
        """Raise :class:`lease.LeaseLost` or :class:`JobCancelled` when the job must stop now."""
        if self.heartbeat is not None and self.heartbeat.lost.is_set():
            raise lease.LeaseLost(f"job {self.job_id}: lease lost")
        with self.runtime.sessions() as session:
            row = session.execute(
                update(Job).where(Job.id == self.job_id, Job.worker_id == self.worker_id, Job.status == JobStatus.running)
                .values(heartbeat_at=utcnow()).returning(Job.cancel_requested)
            ).first()
            session.commit()
        if row is None:
            raise lease.LeaseLost(f"job {self.job_id}: lease lost")
        if row[0]:
            raise JobCancelled(f"job {self.job_id} cancelled")

    def set_progress(self, done: int, total: int | None = None) -> None:
        """Persist progress now (outside any chunk), fenced on the lease."""
        with self.runtime.sessions() as session:
            self._write_progress(session, done, total, None)
            session.commit()

    @contextmanager
    def chunk(self, *, done: int, state: dict[str, Any] | None = None) -> Iterator[Session]:
        """One atomic chunk: the handler's writes plus ``done``/``state``, committed together."""
        session = self.runtime.sessions()
        try:
            yield session
            self._write_progress(session, done, self.total, state)
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _write_progress(self, session: Session, done: int, total: int | None, state: dict[str, Any] | None) -> None:
        values: dict[str, Any] = {"done": done, "heartbeat_at": utcnow()}
        if total is not None:
            values["total"] = total
            self.total = total
        if state is not None:
            merged = {**self.state, **state}
            values["result"] = merged
        stmt = (
            update(Job)
            .where(Job.id == self.job_id, Job.worker_id == self.worker_id, Job.status == JobStatus.running)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if session.execute(stmt).rowcount != 1:
            raise lease.LeaseLost(f"job {self.job_id}: lease lost before writing progress")
        self.done = done
        if state is not None:
            self.state = merged


Handler = Callable[[JobContext], dict[str, Any] | None]


def _finish(ctx: JobContext, status: JobStatus, *, result: dict[str, Any] | None, error: str | None) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error, "heartbeat_at": utcnow()}
    if result is not None:
        values["result"] = result
    with ctx.runtime.sessions() as session:
        session.execute(
            update(Job).where(Job.id == ctx.job_id, Job.worker_id == ctx.worker_id, Job.status == JobStatus.running)
            .values(**values).execution_options(synchronize_session=False)
        )
        session.commit()


def execute(job_id: int, *, worker_id: str | None = None, runtime: Runtime | None = None) -> str:
    """Run job ``job_id`` if this caller can claim it; returns what happened (for logs/tests).

    Transient errors (lost database/broker connection) release the claim and propagate so
    Celery retries with backoff; anything else fails the job with its message.
    """
    from camcore.allocator import keep_freed_memory
    from worker.device import select_device
    from worker.handlers import handler_for

    keep_freed_memory()  # once per process (also done at worker start-up, before its threads)
    runtime = runtime or get_runtime()
    worker_id = worker_id or lease.worker_identity()
    lease_s = lease.lease_seconds()
    with runtime.sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            return "missing"
        if job.status.finished:
            return f"already {job.status.value}"
    if lease.cancel_if_requested(runtime.sessions, job_id, lease_s):
        return "cancelled"
    if not lease.claim(runtime.sessions, job_id, worker_id, lease_s):
        return "not claimed"
    with runtime.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        ctx = JobContext(runtime=runtime, job_id=job.id, kind=job.kind, collection_id=job.collection_id, params=dict(job.params or {}),
                         worker_id=worker_id, device="cpu", chunk_size=chunk_size(), done=job.done or 0, total=job.total,
                         state=dict(job.result or {}))
    try:
        ctx.device = select_device()
        handler = handler_for(ctx.kind)
    except Exception as exc:  # noqa: BLE001 - configuration errors fail the job clearly
        _finish(ctx, JobStatus.failed, result=None, error=str(exc))
        return "failed"
    with lease.Heartbeat(runtime.sessions, job_id, worker_id, interval_s=max(0.5, lease_s / 4)) as beat:
        ctx.heartbeat = beat
        try:
            result = handler(ctx)
        except lease.LeaseLost:
            log.warning("job %s: lease lost; another worker owns it now", job_id)
            return "lease lost"
        except JobCancelled:
            _finish(ctx, JobStatus.cancelled, result=ctx.state or None, error=None)
            return "cancelled"
        except JobFailed as exc:
            _finish(ctx, JobStatus.failed, result=ctx.state or None, error=str(exc))
            return "failed"
        except Exception as exc:  # noqa: BLE001
            if is_transient(exc):
                try:
                    lease.release(runtime.sessions, job_id, worker_id)
                except Exception:  # noqa: BLE001 - the lease expires and the watchdog requeues it
                    pass
                raise
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            _finish(ctx, JobStatus.failed, result=ctx.state or None, error=f"{type(exc).__name__}: {exc}")
            return "failed"
    _finish(ctx, JobStatus.succeeded, result={**ctx.state, **(result or {})}, error=None)
    return "succeeded"
