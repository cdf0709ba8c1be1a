"""The lease watchdog every worker runs (Celery workers and the embedded worker alike).

Each pass:

1. finds running jobs with an expired lease (their worker died); an atomic ``UPDATE`` moves one
   back to ``queued`` (only one watchdog wins), and then its task is sent again. The job resumes
   from its first unfinished chunk. A job whose cancel was requested is finished as
   ``cancelled`` instead.
2. finds queued jobs whose message is lost: with Redis, jobs queued for longer than
   ``CAMLABEL_QUEUED_GRACE_S`` (30 s) whose task id the broker holds neither in its queues nor
   among its delivered, unacknowledged messages (a non-persistent Redis restarted, a message
   never sent because Redis was down); in embedded mode, queued jobs whose message this process
   did not send (the memory broker died with an earlier process). Their message is sent again.
   Where the broker cannot be inspected, a job still queued after ``CAMLABEL_REQUEUE_QUEUED_S``
   (900 s) is re-sent. Re-sends are idempotent: only one message can claim a job.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import timedelta

import redis

from worker import runtime as runtime_module
from worker.config import Settings
from worker.queue import lease
from worker.queue.app import celery_config, queue_for
from worker.queue.send import send, sent_in_this_process
from worker.runtime import Runtime, get_runtime
from worker.store.models import Job
from worker.store.models.base import utcnow

log = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None
_stop = threading.Event()
#: kombu's Redis transport: a queue's priority lists are ``<queue>\x06\x16<priority>``; messages
#: delivered but not acknowledged sit in the ``unacked`` hash.
_PRIORITY_SEP = "\x06\x16"
_PRIORITIES = (0, 3, 6, 9)
_UNACKED = "unacked"


def _message_task_id(raw: bytes | str, *, unacked: bool) -> str | None:
    try:
        data = json.loads(raw)
        message = data[0] if unacked else data
        return str(message["headers"]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def broker_task_ids(settings: Settings) -> set[str] | None:
    """Task ids the Redis broker holds, queued or delivered and unacknowledged; ``None`` when the
    broker is not Redis. Raises when Redis is unreachable."""
    if settings.embedded or not str(settings.redis_url or "").startswith(("redis://", "rediss://", "unix://")):
        return None
    queues = [q.name for q in celery_config(settings)["task_queues"]]
    client = redis.Redis.from_url(str(settings.redis_url), socket_timeout=10, socket_connect_timeout=5)
    try:
        held: set[str | None] = set()
        for queue in queues:
            for priority in _PRIORITIES:
                key = queue if priority == 0 else f"{queue}{_PRIORITY_SEP}{priority}"
                held.update(_message_task_id(raw, unacked=False) for raw in client.lrange(key, 0, -1))
        held.update(_message_task_id(raw, unacked=True) for raw in client.hvals(_UNACKED))
    finally:
        client.close()
    return {task_id for task_id in held if task_id is not None}


def _requeue_expired(runtime: Runtime, lease_s: float) -> list[int]:
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
            job = session.get(Job, job_id) if won else None
            queue = job.queue if job is not None else None
            session.commit()
        if not won:
            continue
        send(job_id, queue or queue_for(kind), task_id, runtime=runtime)
        log.warning("watchdog: job %s lost its worker; re-enqueued on %s", job_id, queue)
        requeued.append(job_id)
    return requeued


def _resend_lost(runtime: Runtime) -> list[int]:
    settings = runtime.settings
    grace_s = lease.queued_grace_seconds()
    with runtime.sessions() as session:
        waiting = lease.queued_jobs(session, grace_s)
    if not waiting:
        return []
    held = None if settings.embedded else broker_task_ids(settings)
    fallback_s = lease.requeue_queued_seconds()
    now = utcnow()
    resent: list[int] = []
    for job_id, kind, task_id, last in waiting:
        if settings.embedded:
            lost = not (task_id and sent_in_this_process(task_id))
        elif held is not None:
            lost = task_id not in held
        else:
            lost = last is None or now - last > timedelta(seconds=fallback_s)
        if not lost:
            continue
        new_id = str(uuid.uuid4())
        with runtime.sessions() as session:
            won = lease.mark_resent(session, job_id, grace_s, new_id, previous_task_id=task_id)
            job = session.get(Job, job_id) if won else None
            queue = job.queue if job is not None else None
            session.commit()
        if won:
            send(job_id, queue or queue_for(kind), new_id, runtime=runtime)
            log.warning("watchdog: queued job %s had no message in the broker; sent it again", job_id)
            resent.append(job_id)
    return resent


def sweep(runtime: Runtime | None = None) -> list[int]:
    """One pass over ``runtime``'s jobs (default: the current runtime); returns the ids of the jobs
    re-enqueued (expired leases, then lost messages)."""
    runtime = runtime or get_runtime()
    requeued = _requeue_expired(runtime, lease.lease_seconds())
    return requeued + _resend_lost(runtime)


def _loop(interval_s: float, runtime: Runtime) -> None:
    """Sweep every ``interval_s`` seconds while ``runtime`` is the process's runtime (a process
    that configures another one, as tests do, ends this watchdog: it never acts on another
    database)."""
    while True:
        if runtime_module._runtime is not runtime:
            log.info("watchdog: the runtime changed; stopping")
            return
        try:
            sweep(runtime)
        except Exception as exc:  # noqa: BLE001 - database or broker down: try again next pass
            log.warning("watchdog pass failed: %s", exc)
        if _stop.wait(interval_s):
            return


def watchdog_interval() -> float:
    """Seconds between passes: a third of the lease and of the queued grace, at least 1."""
    return max(1.0, min(lease.lease_seconds(), lease.queued_grace_seconds()) / 3)


def start_watchdog(interval_s: float | None = None) -> None:
    """Start the watchdog thread for the current runtime once per process (first pass at once)."""
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _stop.clear()
        interval = interval_s if interval_s is not None else watchdog_interval()
        _thread = threading.Thread(target=_loop, args=(interval, get_runtime()), name="camlabel-watchdog", daemon=True)
        _thread.start()


def stop_watchdog() -> None:
    global _thread
    _stop.set()
    with _lock:
        thread, _thread = _thread, None
    if thread is not None:
        thread.join(timeout=5)
