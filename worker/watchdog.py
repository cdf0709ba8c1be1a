"""The lease watchdog every worker runs: it re-enqueues running jobs whose worker stopped beating.

Each pass finds running jobs with an expired lease; an atomic ``UPDATE`` moves one back to
``queued`` (only one watchdog wins), and then its task is sent again. The job resumes from its
first unfinished chunk. A job whose cancel was requested is finished as ``cancelled`` instead.
A job still ``queued`` long after it was made (its message lost with a Redis restart, say) gets
its message sent again; a duplicate message is harmless, as only one can claim the job.
"""

from __future__ import annotations

import logging
import threading
import uuid

from worker import lease
from worker.celery_app import TASK_NAMES, configure_celery
from worker.runtime import get_runtime
from worker.store.models import Job, JobKind

log = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None
_stop = threading.Event()


def sweep() -> list[int]:
    """One pass; returns the ids of the jobs re-enqueued (expired leases, then stale queued jobs)."""
    runtime = get_runtime()
    lease_s = lease.lease_seconds()
    requeued: list[int] = []
    with runtime.sessions() as session:
        expired = lease.expired_jobs(session, lease_s)
    for job_id, kind in expired:
        if lease.cancel_if_requested(runtime.sessions, job_id, lease_s):
            log.info("watchdog: job %s was cancelled while its worker was gone", job_id)
            continue
        task_id = str(uuid.uuid4())
        with runtime.sessions() as session:
            won = lease.requeue_expired(session, job_id, lease_s, task_id)
            queue = session.get(Job, job_id).queue if won else None  # type: ignore[union-attr]
            session.commit()
        if not won:
            continue
        configure_celery(runtime.settings).send_task(TASK_NAMES[JobKind(kind)], args=[job_id], queue=queue, task_id=task_id)
        log.warning("watchdog: job %s lost its worker; re-enqueued on %s", job_id, queue)
        requeued.append(job_id)
    age_s = lease.requeue_queued_seconds()
    with runtime.sessions() as session:
        stale = lease.stale_queued_jobs(session, age_s)
    for job_id, kind in stale:
        task_id = str(uuid.uuid4())
        with runtime.sessions() as session:
            won = lease.mark_resent(session, job_id, age_s, task_id)
            queue = session.get(Job, job_id).queue if won else None  # type: ignore[union-attr]
            session.commit()
        if won:
            configure_celery(runtime.settings).send_task(TASK_NAMES[JobKind(kind)], args=[job_id], queue=queue, task_id=task_id)
            log.warning("watchdog: job %s still queued after %.0f s; its message was sent again", job_id, age_s)
            requeued.append(job_id)
    return requeued


def _loop(interval_s: float) -> None:
    while True:
        try:
            sweep()
        except Exception as exc:  # noqa: BLE001 - database down: try again next pass
            log.warning("watchdog pass failed: %s", exc)
        if _stop.wait(interval_s):
            return


def start_watchdog(interval_s: float | None = None) -> None:
    """Start the watchdog thread once per process (first pass immediately)."""
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _stop.clear()
        interval = interval_s if interval_s is not None else max(1.0, lease.lease_seconds() / 3)
        _thread = threading.Thread(target=_loop, args=(interval,), name="camlabel-watchdog", daemon=True)
        _thread.start()


def stop_watchdog() -> None:
    global _thread
    _stop.set()
    with _lock:
        thread, _thread = _thread, None
    if thread is not None:
        thread.join(timeout=5)
