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
from web.services.exports import export_params
from web.validation import parse_int
from worker.preflight import JobRefused, check_job
from worker.queue.submit import JobQueueError, request_cancel, submit
from worker.store.models import Job, JobKind

JOB_KINDS_FROM_UI = ("train", "infer", "export", "evaluate", "calibrate")
IMAGENET_ARCHS = ("efficientnet_lite0", "resnet18", "resnet50")  # the built-in ImageNet classifiers
TRAIN_MODES = ("linear", "finetune")


def submit_job(session: Session, *, kind: str, collection_id: int, params: dict[str, Any], user_id: int | None,
               inline: bool = False, preflight: bool = True) -> Job:
    """Check, record and enqueue a job (``inline``: record it only, the caller runs it in-process).

    ``Invalid`` for an unknown kind, a job that cannot run (``cannot_run``, with the ``field`` at
    fault; checked only with ``preflight``: the CLI records such a job, which then fails with its
    reason in the job list) or parameters the worker refuses; ``Unavailable`` when the broker
    refused the message (the job stays queued and the watchdog sends it again)."""
    get_collection(session, collection_id)
    try:
        job_kind = JobKind(kind)
    except ValueError as exc:
        raise Invalid("bad_kind", f"job kind must be one of {[k.value for k in JobKind]}, not {kind!r}") from exc
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


def job_params_from(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validated parameters of a job started from a form or JSON body (``Invalid`` naming the field)."""
    params: dict[str, Any] = {}
    if kind == "train":
        if data.get("arch"):
            params["arch"] = str(data.get("arch"))
        if data.get("mode"):
            if data.get("mode") not in TRAIN_MODES:
                raise Invalid("bad_mode", "mode must be linear or finetune")
            params["mode"] = data.get("mode")
        if data.get("epochs") not in (None, ""):
            params["epochs"] = parse_int(data.get("epochs"), "epochs")
    elif kind == "infer":
        if data.get("model_version_id") not in (None, ""):
            params["model_version_id"] = model_ref(data.get("model_version_id"))
    elif kind == "export":
        params.update(export_params(data))
    elif kind == "evaluate":
        params["box_status"] = data.get("box_status") or "all"
    elif kind == "calibrate":
        if data.get("model_version_id") not in (None, ""):
            params["model_version_id"] = parse_int(data.get("model_version_id"), "model_version_id")
        if data.get("preview") not in (None, "", False, "0", "false"):
            if data.get("preview") not in (True, "1", "true", "on"):
                raise Invalid("bad_field", "preview must be true or false", field="preview")
            params["preview"] = True
    return params


def model_ref(value: Any) -> int | str:
    """An infer job's model: a model version id, or ``imagenet`` / ``imagenet:<arch>`` (the API's
    ``model_version_id`` and the CLI's ``--model``), lower-cased."""
    if isinstance(value, str) and value.strip().lower().startswith("imagenet"):
        ref = value.strip().lower()
        arch = ref.split(":", 1)[1] if ":" in ref else IMAGENET_ARCHS[0]
        if ref not in ("imagenet", f"imagenet:{arch}") or arch not in IMAGENET_ARCHS:
            raise Invalid("bad_value", f"model_version_id: 'imagenet' or 'imagenet:<arch>' with arch one of {list(IMAGENET_ARCHS)}",
                          field="model_version_id")
        return ref
    return parse_int(value, "model_version_id")
