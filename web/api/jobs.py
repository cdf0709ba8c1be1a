"""Jobs: start, list, progress, cancel."""

from __future__ import annotations

from flask import Response
from flask_login import current_user
from sqlalchemy import select

from web.api import bp, id_page, json_body
from web.db import blobs, db, runtime
from web.errors import ApiError
from web.exports import job_download
from web.schemas import job_json
from web.services import jobs as job_service
from web.services.collections import get_collection
from web.services.jobs import JOB_KINDS_FROM_UI, cancel_job, submit_job
from worker.store.models import Job


@bp.get("/collections/<int:collection_id>/jobs")
def list_jobs(collection_id: int) -> dict:
    """Jobs of a collection, newest first; cursor = last id seen."""
    session = db()
    get_collection(session, collection_id)
    rows, next_cursor = id_page(session, select(Job).where(Job.collection_id == collection_id), Job.id, newest_first=True)
    data_dir = runtime().settings.data_dir
    return {"items": [job_json(j, data_dir) for j in rows], "next_cursor": next_cursor}


@bp.post("/collections/<int:collection_id>/jobs")
def post_job(collection_id: int) -> tuple[dict, int]:
    """Start a job: ``{"kind": "train"|"infer"|"export"|"evaluate"|"calibrate", "params": {...}}``."""
    data = json_body()
    kind = str(data.get("kind", ""))
    if kind not in JOB_KINDS_FROM_UI:
        raise ApiError(400, "bad_kind", f"kind must be one of {JOB_KINDS_FROM_UI} (imports start from /uploads)")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise ApiError(400, "bad_params", "params must be an object")
    job = submit_job(db(), kind=kind, collection_id=collection_id, params=params, user_id=current_user.id)
    return job_json(job, runtime().settings.data_dir), 202


@bp.get("/jobs/<int:job_id>")
def get_job(job_id: int) -> dict:
    return job_json(job_service.get_job(db(), job_id), runtime().settings.data_dir)


@bp.post("/jobs/<int:job_id>/cancel")
def post_cancel(job_id: int) -> dict:
    return job_json(cancel_job(db(), job_id), runtime().settings.data_dir)


@bp.get("/jobs/<int:job_id>/download")
def download_job_export(job_id: int) -> Response:
    """An export job's file, named ``<collection>-<format>-<YYYYMMDD>.<ext>`` (Content-Disposition)."""
    return job_download(blobs(), job_service.get_job(db(), job_id).result or {})
