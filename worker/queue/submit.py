"""Submitting and cancelling jobs (the API the web app and the CLI call).

``submit`` writes the job row and commits *before* enqueueing, so a worker never receives
a job id it cannot read. With Redis the message goes to the job's queue; in embedded mode
(no ``REDIS_URL``) it goes to the in-process worker thread (started on first use), or, with
``inline=True`` (the CLI), the caller runs the job itself.

When the broker refuses the message (Redis down) the job stays ``queued``, its ``error`` says
the message is not sent yet, and :class:`JobQueueError` tells the caller; the watchdog
(:mod:`worker.queue.watchdog`) sends it once the broker is back (it re-sends queued jobs whose message
the broker does not hold), and a worker running it clears the note.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from worker.jobs.params import parse_params
from worker.queue.app import configure_celery, queue_for
from worker.queue.embedded import ensure_worker
from worker.queue.send import send
from worker.runtime import get_runtime
from worker.staging import remove_staging
from worker.store.db import rows_matched
from worker.store.models import Collection, Job, JobKind, JobStatus
from worker.store.models.base import utcnow

log = logging.getLogger(__name__)


class JobQueueError(RuntimeError):
    """The job row was written (queued) but its message could not be sent now; the watchdog sends
    it when the broker is reachable again."""


def submit(session: Session, *, kind: JobKind | str, collection_id: int | None, params: Mapping[str, Any] | None,
           user_id: int | None = None, inline: bool = False) -> Job:
    """Create a queued job, commit, then enqueue it (unless ``inline``: the caller runs it).

    ``params`` are checked by the kind's parameter class (:func:`worker.jobs.params.parse_params`)
    and stored as its ``to_dict()``. Raises ``ValueError`` for an unknown kind or collection or
    bad parameters (naming the field), :class:`JobQueueError` when the broker refuses the message.
    """
    try:
        kind = JobKind(kind)
    except ValueError as exc:
        raise ValueError(f"unknown job kind {kind!r}; expected one of {[k.value for k in JobKind]}") from exc
    if collection_id is not None and session.get(Collection, collection_id) is None:
        raise ValueError(f"collection {collection_id} does not exist")
    checked = parse_params(kind, params or {})
    task_id = str(uuid.uuid4())
    job = Job(kind=kind, collection_id=collection_id, params=checked.to_dict(), queue=queue_for(kind), status=JobStatus.queued,
              done=0, attempts=0, cancel_requested=False, created_by_id=user_id, celery_task_id=task_id)
    session.add(job)
    session.commit()
    if not inline:
        enqueue(job.id, job.queue, task_id)
    return job


def enqueue(job_id: int, queue: str, task_id: str) -> None:
    """Send the task message for a job row that is already committed (in embedded mode the
    in-process worker is started first).

    A broker failure leaves the job queued with a note in ``error`` and raises
    :class:`JobQueueError` (the watchdog sends the message later)."""
    try:
        if get_runtime().settings.embedded:
            ensure_worker()
        send(job_id, queue, task_id)
    except Exception as exc:  # noqa: BLE001 - any broker failure: note it on the job, tell the caller
        note = f"not sent to the job queue yet (it is unreachable: {exc}); it is sent automatically when the queue is back"
        try:
            with get_runtime().sessions() as session:
                session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.queued).values(error=note[:2000]))
                session.commit()
        except Exception:  # noqa: BLE001 - the job stays queued either way
            log.warning("could not note the queue failure on job %s", job_id)
        raise JobQueueError(f"job {job_id} is recorded and queued, but the job queue is unreachable ({exc}); "
                            "it starts automatically once the queue is back") from exc


def request_cancel(session: Session, job_id: int) -> Job:
    """Cancel a job: a queued one is revoked and marked cancelled at once (a queued import's
    staged upload is deleted: no handler will run to do it); a running one gets
    ``cancel_requested`` and stops at its next chunk, keeping what it finished. Finished jobs
    are returned unchanged. ``LookupError`` when the job does not exist.
    """
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    if job.status.finished:
        return job
    now = utcnow()
    revoked = rows_matched(
        session,
        update(Job).where(Job.id == job_id, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False),
    ) == 1
    if not revoked:
        session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.running)
                        .values(cancel_requested=True).execution_options(synchronize_session=False))
    session.commit()
    session.refresh(job)
    if revoked and job.celery_task_id:
        _revoke(job.celery_task_id)
    staging = (job.params or {}).get("staging")
    if revoked and job.kind is JobKind.import_ and staging:
        remove_staging(get_runtime().settings.data_dir, staging)
    return job


def _revoke(task_id: str) -> None:
    """Best effort: the claim check already refuses a cancelled job if the message arrives."""
    runtime = get_runtime()
    if runtime.settings.embedded:
        return
    try:
        configure_celery(runtime.settings).control.revoke(task_id)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not revoke task %s: %s", task_id, exc)
