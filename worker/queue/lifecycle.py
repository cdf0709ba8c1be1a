"""Hooks of a Celery worker process (``camlabel worker``), connected when the app loads its tasks.

Start-up keeps freed tensor memory for reuse (:mod:`camcore.allocator`), a forked pool child
drops the parent's database connections, and the lease watchdog runs from ``worker_ready``
until ``worker_shutdown``.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown

from camcore.allocator import keep_freed_memory
from worker import runtime
from worker.queue.watchdog import start_watchdog, stop_watchdog


@worker_init.connect
def _keep_freed_memory(**_: Any) -> None:
    """Before the pool starts (forked pool children inherit the setting)."""
    keep_freed_memory()


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    """A forked pool child must not share the parent's database connections."""
    if runtime._runtime is not None:
        runtime._runtime.engine.dispose(close=False)


@worker_ready.connect
def _start_watchdog(sender: Any = None, **_: Any) -> None:
    start_watchdog()


@worker_shutdown.connect
def _stop_watchdog(**_: Any) -> None:
    stop_watchdog()
