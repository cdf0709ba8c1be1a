"""Celery tasks: one per job kind, each takes a job id and runs :func:`worker.queue.execution.execute`.

A missing job row means nothing to do. Lost database/broker connections are retried with
exponential backoff (``autoretry_for``); the job's claim is released before each retry.
"""

from __future__ import annotations

from celery import shared_task
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError

from worker.queue.app import TASK_NAMES, RuntimeTask
from worker.store.models import JobKind

TRANSIENT = (OperationalError, RedisConnectionError, RedisTimeoutError, KombuOperationalError)
_RETRY = {
    "base": RuntimeTask,
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 8,
    "acks_late": True,
    "ignore_result": True,
}


def _run(job_id: int) -> str:
    from worker.queue.execution import execute

    return execute(int(job_id))


@shared_task(name=TASK_NAMES[JobKind.import_], **_RETRY)
def import_job(job_id: int) -> str:
    return _run(job_id)


@shared_task(name=TASK_NAMES[JobKind.train], **_RETRY)
def train_job(job_id: int) -> str:
    return _run(job_id)


@shared_task(name=TASK_NAMES[JobKind.infer], **_RETRY)
def infer_job(job_id: int) -> str:
    return _run(job_id)


@shared_task(name=TASK_NAMES[JobKind.export], **_RETRY)
def export_job(job_id: int) -> str:
    return _run(job_id)


@shared_task(name=TASK_NAMES[JobKind.evaluate], **_RETRY)
def evaluate_job(job_id: int) -> str:
    return _run(job_id)


@shared_task(name=TASK_NAMES[JobKind.calibrate], **_RETRY)
def calibrate_job(job_id: int) -> str:
    return _run(job_id)
