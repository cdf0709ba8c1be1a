"""What a job handler sees of its job: :class:`JobContext`, and the two ways it ends early.

Handlers work in chunks: compute outside any transaction, then write one chunk's results
together with the job's progress in one transaction (:meth:`JobContext.chunk`), fenced on this
worker's lease. A chunk is therefore either fully recorded, progress included, or not at all,
and a resumed job starts at the first unfinished chunk (its handler reads ``ctx.state``, the
persisted cursor and counters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar

from sqlalchemy import update
from sqlalchemy.orm import Session

from worker.queue import lease
from worker.runtime import Runtime
from worker.store.db import rows_matched, session_scope
from worker.store.models import Job, JobKind, JobStatus
from worker.store.models.base import utcnow


class JobCancelled(Exception):
    """The job was asked to stop; it ends as ``cancelled`` keeping its committed chunks."""


class JobFailed(Exception):
    """A clear, user-facing reason the job cannot go on (bad input, missing model ...)."""


class FromDict(Protocol):
    """A job's parameter class (:mod:`worker.jobs.params`)."""

    @classmethod
    def from_dict(cls, d: Any) -> Self: ...


P = TypeVar("P", bound=FromDict)


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

    def read_params(self, cls: type[P]) -> P:
        """``params`` read by the job's parameter class ``cls``; :class:`JobFailed` naming the
        field when a stored parameter cannot be used."""
        try:
            return cls.from_dict(self.params)
        except ValueError as exc:
            raise JobFailed(f"bad job parameter: {exc}") from exc

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
        with session_scope(self.runtime.sessions) as session:
            yield session
            self._write_progress(session, done, self.total, state)

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
        if rows_matched(session, stmt) != 1:
            raise lease.LeaseLost(f"job {self.job_id}: lease lost before writing progress")
        self.done = done
        if state is not None:
            self.state = merged


#: A job handler: runs the job of ``ctx`` and returns its result (merged into ``jobs.result``).
Handler = Callable[[JobContext], dict[str, Any] | None]
