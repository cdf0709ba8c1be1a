"""Collections, categories, uploads, exports and evaluations."""

from __future__ import annotations

from pathlib import Path

from flask import Response, request
from flask_login import current_user
from sqlalchemy import select

from web.api import bp, id_page, json_body
from web.auth import admin_required
from web.db import blobs, db, runtime
from web.exports import send_export
from web.limits import large_body
from web.schemas import collection_json, evaluation_json, image_json, job_json
from web.services.collections import create_collection, delete_collection, get_collection, image_status_counts
from web.services.exports import export_params, write_export
from web.services.ground_truth import import_ground_truth_upload
from web.services.uploads import import_upload
from worker.store.models import Collection, Evaluation, Image, ImageStatus


@bp.get("/collections")
def list_collections() -> dict:
    rows, next_cursor = id_page(db(), select(Collection), Collection.id)
    return {"items": [collection_json(c) for c in rows], "next_cursor": next_cursor}


@bp.post("/collections")
def post_collection() -> tuple[dict, int]:
    collection = create_collection(db(), str(json_body().get("name", "")))
    return collection_json(collection), 201


@bp.get("/collections/<int:collection_id>")
def get_collection_view(collection_id: int) -> dict:
    session = db()
    collection = get_collection(session, collection_id)
    counts = image_status_counts(session, collection_id)
    body = collection_json(collection)
    body["images"] = {"ok": counts.get(ImageStatus.ok.value, 0), "failed": counts.get(ImageStatus.failed.value, 0)}
    return body


@bp.delete("/collections/<int:collection_id>")
@admin_required
def delete_collection_view(collection_id: int) -> tuple[str, int]:
    delete_collection(db(), blobs(), collection_id)
    return "", 204


@bp.post("/collections/<int:collection_id>/uploads")
@large_body
def upload(collection_id: int) -> tuple[dict, int]:
    """Multipart ``files`` (images, or one .zip), optional ``tag`` and ``manifest`` (CSV ``file_name,tags``)."""
    job, n_files = import_upload(db(), Path(runtime().settings.data_dir), collection_id, request.files.getlist("files"),
                                 tag=request.form.get("tag"), manifest=request.files.get("manifest"), user_id=current_user.id)
    return {"job": job_json(job, runtime().settings.data_dir), "files": n_files}, 202


@bp.get("/collections/<int:collection_id>/export")
def export(collection_id: int) -> Response:
    """Download an export written now as the export job writes it (``web.services.exports.export_params``:
    ``format``, ``status``, ``include_unreviewed``, ``val_fraction``, ``seed``) named
    ``<collection>-<format>-<YYYYMMDD>``."""
    session = db()
    get_collection(session, collection_id)
    params = export_params(request.args)
    return send_export(write_export(session, blobs(), Path(runtime().settings.data_dir), collection_id, params))


@bp.post("/collections/<int:collection_id>/ground-truth")
@large_body
def post_ground_truth(collection_id: int) -> dict:
    """Import ground truth: multipart ``file`` (COCO .json; VOC .zip/.xml; YOLO .zip) and ``format``
    (coco|voc|yolo). Answers the import report; 400 naming the field when nothing was imported."""
    report = import_ground_truth_upload(db(), Path(runtime().settings.data_dir), collection_id, request.files.get("file"),
                                        request.form.get("format"))
    return report.to_dict()


@bp.get("/collections/<int:collection_id>/evaluations")
def evaluations(collection_id: int) -> dict:
    session = db()
    get_collection(session, collection_id)
    rows, next_cursor = id_page(session, select(Evaluation).where(Evaluation.collection_id == collection_id), Evaluation.id,
                                newest_first=True, default_limit=20)
    return {
        "items": [evaluation_json(e) for e in rows],
        "next_cursor": next_cursor,
    }


@bp.get("/collections/<int:collection_id>/failed-images")
def failed_images(collection_id: int) -> dict:
    """Images an import could not read, with the reason (per-image import errors)."""
    session = db()
    get_collection(session, collection_id)
    rows, next_cursor = id_page(session, select(Image).where(Image.collection_id == collection_id, Image.status == ImageStatus.failed), Image.id)
    return {"items": [image_json(i) for i in rows], "next_cursor": next_cursor}
