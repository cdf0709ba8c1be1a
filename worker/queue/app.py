"""The Celery application, built from :class:`worker.config.Settings`.

``REDIS_URL`` set: Redis is broker and result backend. Unset (embedded mode): Celery's
memory transport, consumed by an in-process worker thread (:mod:`worker.queue.embedded`).

One task runs every job (:data:`RUN_JOB`, :mod:`worker.queue.task`); the queue is chosen when
the message is sent, from the job's kind: ``gpu`` (train, infer) and ``cpu`` (import, export,
evaluate, calibrate); any kind can be rerouted with ``CAMLABEL_QUEUE_<KIND>=<queue>`` (e.g.
``CAMLABEL_QUEUE_INFER=cpu``). The job row keeps its queue, so a re-send goes to the same one.
Job state lives in the ``jobs`` table, not in the result backend; the task takes a job id.
Long tasks: ``acks_late`` with ``worker_prefetch_multiplier=1``; a job whose worker died is
resumed by the lease watchdog (:mod:`worker.queue.watchdog`), started in every worker on
``worker_ready`` (:mod:`worker.queue.lifecycle`); Redis's ``visibility_timeout`` is only the
late safety net and any redelivered duplicate is dropped by the atomic claim
(:mod:`worker.queue.lease`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from celery import Celery
from kombu import Queue
from kombu import pools as kombu_pools

from worker.config import Settings
from worker.store.models import JobKind

QUEUES = ("gpu", "cpu")
DEFAULT_QUEUES: dict[JobKind, str] = {
    JobKind.train: "gpu",
    JobKind.infer: "gpu",
    JobKind.import_: "cpu",
    JobKind.export: "cpu",
    JobKind.evaluate: "cpu",
    JobKind.calibrate: "cpu",
}
#: The one task: ``run_job(job_id)``.
RUN_JOB = "camlabel.run_job"
#: Seconds Redis waits before redelivering an unacknowledged message (the lease is much shorter).
VISIBILITY_TIMEOUT_S = 6 * 3600


def queue_for(kind: JobKind | str, env: Mapping[str, str] | None = None) -> str:
    """The queue a job kind goes to: ``CAMLABEL_QUEUE_<KIND>`` or the default above."""
    kind = JobKind(kind)
    env = os.environ if env is None else env
    override = env.get(f"CAMLABEL_QUEUE_{kind.value.upper()}")
    return override.strip() if override and override.strip() else DEFAULT_QUEUES[kind]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for ``settings`` (broker/backend URLs plus the long-task options)."""
    if settings.embedded:
        broker, backend = "memory://", "cache+memory://"
    else:
        broker = backend = str(settings.redis_url)
    queues = sorted(set(QUEUES) | {queue_for(kind) for kind in JobKind})
    return {
        "broker_url": broker,
        "result_backend": backend,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_queues": tuple(Queue(name) for name in queues),
        "task_default_queue": "cpu",
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        "result_backend_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "result_expires": 24 * 3600,
    }


def build_celery(settings: Settings | None = None) -> Celery:
    """A new Celery app configured from ``settings`` (default: the environment)."""
    app = Celery("camlabel", include=["worker.queue.task", "worker.queue.lifecycle"])
    app.conf.update(celery_config(settings or Settings.from_env()))
    return app


celery = build_celery()
_configured_for: tuple[str, str] | None = (str(celery.conf.broker_url), str(celery.conf.result_backend))


def configure_celery(settings: Settings) -> Celery:
    """Point the process-wide app at ``settings``' broker (no-op when already there)."""
    global _configured_for
    config = celery_config(settings)
    wanted = (config["broker_url"], config["result_backend"])
    if _configured_for != wanted:
        celery.conf.update(config)
        _configured_for = wanted
        # close the old broker's connections and forget the pools, so the next send builds a pool
        # for the new broker (a closed pool left in kombu's registry fails with "Acquire on closed pool")
        kombu_pools.reset()
        # private attributes (no public reset; celery-types leaves them out), as Celery's own after-fork reset does
        celery._pool = None  # type: ignore[attr-defined]
        celery.amqp._producer_pool = None  # type: ignore[attr-defined]
    return celery
