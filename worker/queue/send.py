"""Sending a job's message: the one place a ``run_job`` message is written.

:func:`worker.queue.submit.submit` sends a job's first message, the watchdog
(:mod:`worker.queue.watchdog`) its re-sends. Embedded mode (no ``REDIS_URL``) keeps the task ids
it sent, because its memory broker lives and dies with this process.
"""

from __future__ import annotations

import threading

from worker.queue.app import RUN_JOB, configure_celery
from worker.runtime import Runtime, get_runtime

#: Task ids this process sent in embedded mode, with the database each was sent for.
_sent_here: dict[str, str] = {}
_sent_lock = threading.Lock()


def sent_in_this_process(task_id: str) -> bool:
    """Whether this process sent ``task_id`` (embedded mode: its message can only be here)."""
    with _sent_lock:
        return task_id in _sent_here


def sent_for_another_database(task_id: str, runtime: Runtime) -> bool:
    """Whether this process sent ``task_id`` for a database other than ``runtime``'s (embedded
    mode, after the process switched databases: the job id names a row of the other database)."""
    with _sent_lock:
        sent_for = _sent_here.get(task_id)
    return sent_for is not None and sent_for != runtime.settings.database_url


def send(job_id: int, queue: str, task_id: str, *, runtime: Runtime | None = None) -> None:
    """Send ``run_job(job_id)`` to ``queue`` under ``task_id`` through ``runtime``'s broker
    (default: the current runtime). Broker errors propagate."""
    runtime = runtime or get_runtime()
    app = configure_celery(runtime.settings)
    if runtime.settings.embedded:
        with _sent_lock:
            _sent_here[task_id] = runtime.settings.database_url
    app.send_task(RUN_JOB, args=[job_id], queue=queue, task_id=task_id)
