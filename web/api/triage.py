"""Triage from the grid: review progress and per-class counts, a bulk accept's preview, accepting
or rejecting a selection of images, and undoing such a bulk write as one action."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_login import current_user

from web.api import bp, json_body
from web.db import db
from web.errors import ApiError
from web.queries import QueryError, class_counts, count_images, filter_from_args, review_progress
from web.services.collections import get_collection
from web.validation import parse_float, parse_int
from worker.store.review_ops import OperationError, preview_bulk_accept, review_selection, undo_operation


def _number(data: Any, name: str, kind: type) -> Any:
    """``data[name]`` as ``kind`` (int or float), or a 400 naming the field."""
    raw = data.get(name)
    if raw is None or raw == "" or isinstance(raw, bool):
        raise ApiError(400, "bad_value", f"{name} is required and must be a number", field=name)
    return parse_int(raw, name) if kind is int else parse_float(raw, name)  # bigint-bounded, finite


def operation_json(operation: Any) -> dict[str, Any]:
    return {"operation_id": operation.id, "kind": operation.kind, "status": operation.status.value, "n_boxes": operation.n_boxes,
            "params": operation.params, "undone": operation.undone_at is not None}


@bp.get("/collections/<int:collection_id>/review-stats")
def review_stats(collection_id: int) -> dict[str, Any]:
    """Images to review / reviewed / marked "no objects", and per-class box counts by review status
    (``classes=0``: images only)."""
    session = db()
    get_collection(session, collection_id)
    progress = review_progress(session, collection_id)
    with_classes = request.args.get("classes", "1") not in ("0", "false", "no")
    return {
        "images": {"total": progress.total, "to_review": progress.to_review, "reviewed": progress.reviewed, "no_objects": progress.no_objects},
        "classes": [{"category_id": c.category_id, "name": c.name, "proposed": c.proposed, "accepted": c.accepted,
                     "rejected": c.rejected, "edited": c.edited, "reviewed": c.reviewed}
                    for c in (class_counts(session, collection_id) if with_classes else [])],
    }


@bp.get("/collections/<int:collection_id>/image-count")
def image_count(collection_id: int) -> dict[str, Any]:
    """How many images match the review grid's filters (same arguments as the image list), counted
    up to a cap: ``exact`` is false when there are more than ``count``."""
    session = db()
    get_collection(session, collection_id)
    try:
        f = filter_from_args(collection_id, request.args)
    except QueryError as exc:
        raise ApiError(400, "bad_query", str(exc)) from exc
    count, exact = count_images(session, f)
    return {"count": count, "exact": exact}


@bp.get("/collections/<int:collection_id>/bulk-accept/preview")
def bulk_accept_preview(collection_id: int) -> dict[str, Any]:
    """How many proposed boxes of ``category_id`` scoring ``>= min_score`` a bulk accept would
    accept, on how many images, and sample images (lowest scores first) with thumbnail URLs; how
    many of them the scores expect to be right, and how the reviewer judged, box by box, the
    class's boxes at that score so far."""
    session = db()
    get_collection(session, collection_id)
    category_id = _number(request.args, "category_id", int)
    min_score = _number(request.args, "min_score", float)
    try:
        preview = preview_bulk_accept(session, collection_id, category_id, min_score)
    except OperationError as exc:
        raise ApiError(400, "bad_value", str(exc)) from exc
    checked = preview.reviewed
    return {"n_boxes": preview.n_boxes, "n_images": preview.n_images,
            "samples": [dict(s, thumb_url=f"/blobs/{s.pop('thumb_key')}") for s in preview.samples],
            "expected_right": round(preview.expected_right, 3),
            "reviewed": {"boxes": checked.reviewed, "accepted": checked.accepted, "edited": checked.edited,
                         "rejected": checked.rejected}}


@bp.post("/collections/<int:collection_id>/review-selection")
def review_selection_view(collection_id: int) -> tuple[dict[str, Any], int]:
    """Accept or reject the proposed boxes of the selected images: body ``{"image_ids": [..],
    "status": "accepted"|"rejected"}``; answers the operation (undo it with its id)."""
    session = db()
    get_collection(session, collection_id)
    data = json_body()
    ids = data.get("image_ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ApiError(400, "bad_value", "image_ids must be a list of image ids", field="image_ids")
    if data.get("status") not in ("accepted", "rejected"):
        raise ApiError(400, "bad_value", "status must be 'accepted' or 'rejected'", field="status")
    try:
        operation = review_selection(session, collection_id, ids, data["status"], user_id=current_user.id)
    except OperationError as exc:
        session.rollback()
        raise ApiError(400, "bad_value", str(exc), field="image_ids") from exc
    session.commit()
    return operation_json(operation), 201


@bp.post("/collections/<int:collection_id>/review-operations/<int:operation_id>/undo")
def undo_operation_view(collection_id: int, operation_id: int) -> dict[str, Any]:
    """Undo a bulk write: each box goes back to its previous status unless edited since
    (``skipped`` counts those)."""
    session = db()
    get_collection(session, collection_id)
    try:
        result = undo_operation(session, operation_id, collection_id=collection_id)
    except OperationError as exc:
        session.rollback()
        status = 404 if "no review operation" in str(exc) else 409
        raise ApiError(status, "not_found" if status == 404 else "already_undone", str(exc)) from exc
    session.commit()
    return {"operation_id": result.operation_id, "restored": result.restored, "skipped": result.skipped}
