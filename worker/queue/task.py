"""The one Celery task: ``run_job(job_id)`` runs :func:`worker.queue.execution.execute`.

Every job kind goes through it; the queue was chosen when the message was sent
(:func:`worker.queue.send.send`). A missing job row means nothing to do. Lost database/broker
connections are retried with exponential backoff (``autoretry_for``); the job's claim is
released before each retry.

Messages of the per-kind task names of earlier releases (``camlabel.import``, ``camlabel.train``
...) are not handled: a worker rejects them as unregistered, the broker drops them, and the
watchdog sends the still-queued job again as ``run_job`` (it re-sends queued jobs whose message
the broker does not hold).
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from worker.queue.app import RUN_JOB
from worker.queue.execution import execute
from worker.queue.send import sent_for_another_database
from worker.queue.transient import TRANSIENT_ERRORS
from worker.runtime import get_runtime


class RuntimeTask(Task):
    """Base of camlabel tasks: makes sure the runtime (database, blobs) is configured first."""

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        get_runtime()
        return super().__call__(*args, **kwargs)


@shared_task(name=RUN_JOB, base=RuntimeTask, bind=True, autoretry_for=TRANSIENT_ERRORS, retry_backoff=2, retry_backoff_max=120,
             retry_jitter=True, max_retries=8, acks_late=True, ignore_result=True)
def run_job(self: Task, job_id: int) -> str:
    """Run job ``job_id`` (any kind); returns what happened, as :func:`execute` says.

    In embedded mode a message this process sent for another database (it switched databases
    since) is dropped: its job id names a row of that database, not of this one."""
    runtime = get_runtime()
    if runtime.settings.embedded and self.request.id and sent_for_another_database(self.request.id, runtime):
        return "sent for another database"
    return execute(int(job_id))
