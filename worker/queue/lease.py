"""Job leases: the atomic claim, the heartbeat and the fenced writes that keep one job on one worker.

A worker *claims* a job with one ``UPDATE ... WHERE`` that only matches a queued job or a
running job whose lease (``heartbeat_at``) expired; the database serialises concurrent
claims, so a redelivered Celery message or a second worker never runs the same job twice.
While it runs, a heartbeat thread renews ``heartbeat_at``; every progress write is fenced
on ``worker_id`` so a worker that lost its lease cannot write any more.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker.store.db import rows_matched
from worker.store.models import Job, JobStatus
from worker.store.models.base import utcnow

DEFAULT_LEASE_S = 45.0


def lease_seconds() -> float:
    """Lease length in seconds (``CAMLABEL_JOB_LEASE_S``, default 45)."""
    value = float(os.environ.get("CAMLABEL_JOB_LEASE_S", DEFAULT_LEASE_S))
    if value <= 0:
        raise ValueError(f"CAMLABEL_JOB_LEASE_S must be > 0, got {value}")
    return value


def worker_identity() -> str:
    """``host:pid:thread`` of the caller (one job at a time per identity)."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class LeaseLost(RuntimeError):
    """This worker no longer holds the job's lease (another worker took it over)."""


def claim(sessions: sessionmaker[Session], job_id: int, worker_id: str, lease_s: float) -> bool:
    """Atomically take job ``job_id`` for ``worker_id``; False when it is not claimable."""
    now = utcnow()
    cutoff = now - timedelta(seconds=lease_s)
    stmt = (
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            or_(
                Job.status == JobStatus.queued,
                and_(Job.status == JobStatus.running, or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff, Job.worker_id == worker_id)),
            ),
        )
        .values(status=JobStatus.running, worker_id=worker_id, heartbeat_at=now, attempts=Job.attempts + 1,
                started_at=func.coalesce(Job.started_at, now), error=None)
        .execution_options(synchronize_session=False)
    )
    with sessions() as session:
        claimed = rows_matched(session, stmt) == 1
        session.commit()
    return claimed


def cancel_if_requested(sessions: sessionmaker[Session], job_id: int, lease_s: float) -> bool:
    """A cancel-requested job that no live worker holds ends as ``cancelled``; True when it did.

    Covers a job cancelled while queued and a running job whose worker died after the cancel.
    """
    cutoff = utcnow() - timedelta(seconds=lease_s)
    stmt = (
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(True),
            or_(Job.status == JobStatus.queued,
                and_(Job.status == JobStatus.running, or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff))),
        )
        .values(status=JobStatus.cancelled, finished_at=utcnow(), worker_id=None)
        .execution_options(synchronize_session=False)
    )
    with sessions() as session:
        changed = rows_matched(session, stmt) == 1
        session.commit()
    return changed


def renew(session: Session, job_id: int, worker_id: str) -> bool:
    """Renew the lease; False when another worker holds it or the job left ``running``."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.running)
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return rows_matched(session, stmt) == 1


def release(sessions: sessionmaker[Session], job_id: int, worker_id: str) -> None:
    """Give a running job back to the queue state (before a retry of a transient error)."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.running)
        .values(status=JobStatus.queued, worker_id=None, heartbeat_at=None)
        .execution_options(synchronize_session=False)
    )
    with sessions() as session:
        session.execute(stmt)
        session.commit()


def expired_jobs(session: Session, lease_s: float, now: datetime | None = None) -> list[tuple[int, str]]:
    """``(job id, kind value)`` of running jobs whose lease expired."""
    cutoff = (now or utcnow()) - timedelta(seconds=lease_s)
    rows = session.execute(
        select(Job.id, Job.kind).where(Job.status == JobStatus.running, or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff))
    ).all()
    return [(job_id, kind.value) for job_id, kind in rows]


def requeue_expired(session: Session, job_id: int, lease_s: float, task_id: str) -> bool:
    """Atomically move an expired running job back to ``queued`` (one watchdog wins)."""
    cutoff = utcnow() - timedelta(seconds=lease_s)
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running, or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff))
        .values(status=JobStatus.queued, worker_id=None, heartbeat_at=None, celery_task_id=task_id)
        .execution_options(synchronize_session=False)
    )
    return rows_matched(session, stmt) == 1


DEFAULT_REQUEUE_QUEUED_S = 900.0


def requeue_queued_seconds() -> float:
    """Age after which a still-queued job's message is sent again (``CAMLABEL_REQUEUE_QUEUED_S``, 900)."""
    value = float(os.environ.get("CAMLABEL_REQUEUE_QUEUED_S", DEFAULT_REQUEUE_QUEUED_S))
    if value <= 0:
        raise ValueError(f"CAMLABEL_REQUEUE_QUEUED_S must be > 0, got {value}")
    return value


DEFAULT_QUEUED_GRACE_S = 30.0


def queued_grace_seconds() -> float:
    """How long a queued job's message may take to reach the broker before the watchdog looks for
    it there (``CAMLABEL_QUEUED_GRACE_S``, default 30)."""
    value = float(os.environ.get("CAMLABEL_QUEUED_GRACE_S", DEFAULT_QUEUED_GRACE_S))
    if value <= 0:
        raise ValueError(f"CAMLABEL_QUEUED_GRACE_S must be > 0, got {value}")
    return value


def queued_jobs(session: Session, age_s: float) -> list[tuple[int, str, str | None, datetime]]:
    """``(job id, kind value, task id, last send)`` of jobs queued longer than ``age_s`` and not
    re-sent within it; ``last send`` is the last re-send (``heartbeat_at``) or the creation."""
    cutoff = utcnow() - timedelta(seconds=age_s)
    rows = session.execute(
        select(Job.id, Job.kind, Job.celery_task_id, func.coalesce(Job.heartbeat_at, Job.created_at))
        .where(Job.status == JobStatus.queued, Job.created_at < cutoff, or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff))
        .order_by(Job.id)
    ).all()
    return [(job_id, kind.value, task_id, last) for job_id, kind, task_id, last in rows]


def mark_resent(session: Session, job_id: int, age_s: float, task_id: str, *, previous_task_id: str | None = None) -> bool:
    """Atomically record a re-send of a stale queued job (one watchdog wins); with
    ``previous_task_id`` only if the job still has that task id (nobody re-sent it meanwhile)."""
    cutoff = utcnow() - timedelta(seconds=age_s)
    conditions = [Job.id == job_id, Job.status == JobStatus.queued, or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff)]
    if previous_task_id is not None:
        conditions.append(Job.celery_task_id == previous_task_id)
    stmt = (
        update(Job)
        .where(*conditions)
        .values(heartbeat_at=utcnow(), celery_task_id=task_id, error=None)
        .execution_options(synchronize_session=False)
    )
    return rows_matched(session, stmt) == 1


class Heartbeat:
    """Renews a job's lease every ``interval_s`` from a daemon thread until stopped.

    ``lost`` is set once a renewal finds the lease gone; the job stops at its next check.
    Transient database errors are ignored here (the next beat tries again).
    """

    def __init__(self, sessions: sessionmaker[Session], job_id: int, worker_id: str, interval_s: float) -> None:
        self._sessions = sessions
        self._job_id = job_id
        self._worker_id = worker_id
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camlabel-heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                with self._sessions() as session:
                    ok = renew(session, self._job_id, self._worker_id)
                    session.commit()
            except Exception:  # noqa: BLE001 - a failed beat is retried; the lease covers gaps
                continue
            if not ok:
                self.lost.set()
                return
