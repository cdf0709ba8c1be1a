"""Embedded mode (no ``REDIS_URL``): Celery's memory transport consumed by a worker thread.

``ensure_worker()`` starts one in-process Celery ``WorkController`` (pool ``solo``) on a
daemon thread, listening on every queue, so ``camlabel run`` and the demo need no Redis, and
the same lease watchdog as Celery workers (:mod:`worker.queue.watchdog`): a job left ``running`` by
a killed ``camlabel run`` is resumed once its lease expires, and queued jobs whose message died
with that process are sent again.
The CLI does not rely on it: it runs its job in-process with :func:`run_inline`.
"""

from __future__ import annotations

import threading
from typing import Any

from celery.worker import WorkController, state

from camcore.allocator import keep_freed_memory
from worker.queue.app import configure_celery
from worker.queue.execution import execute
from worker.queue.watchdog import start_watchdog, stop_watchdog
from worker.runtime import get_runtime

_lock = threading.Lock()
_worker: Any = None
_thread: threading.Thread | None = None


def ensure_worker(timeout_s: float = 30.0) -> Any:
    """Start the in-process worker once; returns its ``WorkController``."""
    global _worker, _thread
    runtime = get_runtime()
    if not runtime.settings.embedded:
        raise RuntimeError("the embedded worker is only for embedded mode (REDIS_URL unset)")
    with _lock:
        if _thread is not None and _thread.is_alive():
            start_watchdog()  # (a no-op unless the runtime changed since)
            return _worker
        keep_freed_memory()  # before the worker thread's first allocation puts it on its own arena
        app = configure_celery(runtime.settings)
        app.loader.import_default_modules()
        ready = threading.Event()

        class _EmbeddedWorkController(WorkController):
            def on_consumer_ready(self, consumer: Any) -> None:
                super().on_consumer_ready(consumer)
                ready.set()

        worker = _EmbeddedWorkController(
            app=app, hostname="embedded@camlabel", pool="solo", concurrency=1, loglevel="WARNING",
            queues=[q.name for q in app.conf.task_queues], without_heartbeat=True, without_mingle=True, without_gossip=True, ready_callback=None,
        )
        thread = threading.Thread(target=worker.start, name="camlabel-embedded-worker", daemon=True)
        thread.start()
        if not ready.wait(timeout_s):
            raise RuntimeError("the embedded worker did not start")
        _worker, _thread = worker, thread
        start_watchdog()
        return worker


def run_inline(job_id: int) -> str:
    """Run a job in the calling thread (the CLI's embedded mode)."""
    return execute(job_id)


def stop_worker(timeout_s: float = 15.0) -> None:
    """Stop the in-process worker (tests, shutdown); a later ``ensure_worker`` starts a new one."""
    global _worker, _thread
    with _lock:
        worker, thread = _worker, _thread
        _worker = _thread = None
    if worker is None or thread is None:
        return
    stop_watchdog()
    worker.stop(in_sighandler=False)
    thread.join(timeout_s)
    state.should_stop = None
    state.should_terminate = None
