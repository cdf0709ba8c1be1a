"""Jobs: the parameters people may set, preflight, submit, cancel.

One submit path for the pages, the API and the CLI: :func:`submit_job` refuses a job that cannot
run (:mod:`worker.preflight`) before it is recorded, then hands it to the queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from web.services.collections import get_collection
from web.services.errors import Invalid, NotFound, Unavailable
from worker.jobs.params import ParamError, parse_params
from worker.preflight import JobRefused, check_job
from worker.queue.submit import JobQueueError, request_cancel, submit
from worker.store.models import Job, JobKind

JOB_KINDS_FROM_UI = ("train", "infer", "export", "evaluate", "calibrate")


def submit_job(session: Session, *, kind: str, collection_id: int, params: Mapping[str, Any], user_id: int | None,
               inline: bool = False, preflight: bool = True) -> Job:
    """Check, record and enqueue a job (``inline``: record it only, the caller runs it in-process).

    ``Invalid`` for an unknown kind, a parameter the kind's parameter class refuses
    (``bad_value``, :func:`job_params_from`), a job that cannot run (``cannot_run``, with the
    ``field`` at fault; checked only with ``preflight``: the CLI records such a job, which then
    fails with its reason in the job list); ``Unavailable`` when the broker refused the message
    (the job stays queued and the watchdog sends it again)."""
    get_collection(session, collection_id)
    try:
        job_kind = JobKind(kind)
    except ValueError as exc:
        raise Invalid("bad_kind", f"job kind must be one of {[k.value for k in JobKind]}, not {kind!r}") from exc
    params = job_params_from(job_kind, params)
    if preflight:
        try:
            check_job(session, kind=job_kind, collection_id=collection_id, params=params)
        except JobRefused as exc:
            raise Invalid("cannot_run", str(exc), **({"field": exc.field} if exc.field else {})) from exc
    try:
        return submit(session, kind=job_kind, collection_id=collection_id, params=params, user_id=user_id, inline=inline)
    except ValueError as exc:
        raise Invalid("bad_job", str(exc)) from exc
    except JobQueueError as exc:
        raise Unavailable("queue_unavailable", str(exc)) from exc  # says the job is queued and starts once the queue is back


def get_job(session: Session, job_id: int) -> Job:
    """Job ``job_id`` (``NotFound`` when there is none)."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound("not_found", f"no job {job_id}")
    return job


def cancel_job(session: Session, job_id: int) -> Job:
    """Ask job ``job_id`` to stop (:func:`worker.queue.submit.request_cancel`; commits)."""
    get_job(session, job_id)
    return request_cancel(session, job_id)


def job_params_from(kind: JobKind | str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Job parameters from a form, query string or JSON body, checked by the kind's parameter
    class (:mod:`worker.jobs.params`, which the worker reads them with): their stored form, or
    ``Invalid`` naming the field."""
    try:
        return parse_params(kind, data).to_dict()
    except ParamError as exc:
        raise Invalid("bad_value", str(exc), field=exc.field) from exc
