"""Running one job: claim it, keep its lease alive, hand it to its kind's handler, record the end.

Handlers get a :class:`worker.queue.context.JobContext` (chunked, lease-fenced writes); the
handler of each kind is looked up in :mod:`worker.jobs.registry`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import traceback
from typing import Any

from sqlalchemy import update

from camcore.allocator import keep_freed_memory
from worker.device import select_device
from worker.jobs import registry
from worker.queue import lease
from worker.queue.context import JobCancelled, JobContext, JobFailed
from worker.queue.transient import is_transient
from worker.runtime import Runtime, get_runtime
from worker.store.models import Job, JobStatus
from worker.store.models.base import utcnow

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 64


def chunk_size() -> int:
    """Images per chunk (``CAMLABEL_CHUNK_SIZE``, default 64)."""
    value = int(os.environ.get("CAMLABEL_CHUNK_SIZE", DEFAULT_CHUNK_SIZE))
    if value < 1:
        raise ValueError(f"CAMLABEL_CHUNK_SIZE must be >= 1, got {value}")
    return value


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
        handler = registry.handler_for(ctx.kind)
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
                with contextlib.suppress(Exception):  # unreleased, the lease expires and the watchdog requeues the job
                    lease.release(runtime.sessions, job_id, worker_id)
                raise
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            _finish(ctx, JobStatus.failed, result=ctx.state or None, error=f"{type(exc).__name__}: {exc}")
            return "failed"
    _finish(ctx, JobStatus.succeeded, result={**ctx.state, **(result or {})}, error=None)
    return "succeeded"
