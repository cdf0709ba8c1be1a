"""Images, boxes and review actions (every edit carries the row ``version``; stale -> 409)."""

from __future__ import annotations

import io

import numpy as np
from flask import Response, jsonify, request
from flask_login import current_user
from sqlalchemy import select

from web.api import bp, id_page, json_body, page_limit
from web.db import blobs, db
from web.errors import ApiError
from web.queries import (
    Cursor,
    QueryError,
    boxes_for_images,
    concept_maps_for_images,
    filter_from_args,
    list_boxes,
    list_images,
)
from web.schemas import box_json, concept_map_json, image_json, model_version_json
from web.services import review as review_service
from web.services.collections import get_collection
from web.services.errors import Conflict
from web.services.review import accept_seen_boxes, bulk_accept, create_box, delete_box, edit_box
from web.validation import float_arg, int_arg, parse_int, require_int, require_number
from worker.store.blobs import BlobKeyError, validate_key
from worker.store.models import ModelVersion


def _query_error(exc: QueryError) -> ApiError:
    return ApiError(400, "bad_query", str(exc))


@bp.get("/collections/<int:collection_id>/images")
def list_collection_images(collection_id: int) -> dict:
    """Images filtered like the review grid (``category_id``, ``status``, ``min_score``, ``max_score``,
    ``no_box``, ``sort`` = score|id), keyset-paginated by ``cursor``."""
    session = db()
    get_collection(session, collection_id)
    try:
        f = filter_from_args(collection_id, request.args)
        cursor = Cursor.decode(request.args["cursor"]) if request.args.get("cursor") else None
    except QueryError as exc:
        raise _query_error(exc) from exc
    page = list_images(session, f, limit=page_limit(), after=cursor)
    boxes = boxes_for_images(session, [i.id for i in page.items])
    return {"items": [dict(image_json(i), boxes=[box_json(b) for b in boxes[i.id]]) for i in page.items], "next_cursor": page.next_cursor}


@bp.get("/images/<int:image_id>")
def get_image(image_id: int) -> dict:
    session = db()
    image = review_service.get_image(session, image_id)
    boxes = boxes_for_images(session, [image_id], include_ground_truth=request.args.get("ground_truth") == "1")[image_id]
    maps = concept_maps_for_images(session, [image_id])[image_id]
    return dict(image_json(image), boxes=[box_json(b) for b in boxes],
                concept_maps=[concept_map_json(m) for m in maps])


@bp.get("/maps/<path:key>")
def get_map(key: str) -> Response:
    """A stored concept map for painting a heatmap: ``shape`` ``[h, w]`` (map cells), ``values``
    (``h * w`` integers 0..255, row-major: the map min-max normalised, 255 = hottest, coloured
    through the Turbo colormap), ``min`` / ``max`` (the raw map's range). Keys are content
    addressed, so the answer never changes (cached as immutable)."""
    try:
        if not validate_key(key).startswith("maps/"):
            raise BlobKeyError(key)
        data = blobs().read_bytes(key)
    except (BlobKeyError, FileNotFoundError) as exc:
        raise ApiError(404, "not_found", "no such concept map") from exc
    try:
        cam = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ApiError(404, "not_found", "no such concept map") from exc
    if cam.ndim != 2 or cam.dtype.kind != "f" or not np.isfinite(cam).all():
        raise ApiError(404, "not_found", "no such concept map")
    # min-max to 0..255 as camcore.concept_maps.normalize_map does (numpy here: the web app never loads torch)
    cam = cam.astype(np.float64)
    lo, hi = float(cam.min()), float(cam.max())
    norm = (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)
    values = np.clip(np.rint(norm * 255.0), 0, 255).astype(np.uint8)
    response = jsonify({"shape": list(values.shape), "values": values.ravel().tolist(), "min": lo, "max": hi})
    response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    return response


@bp.get("/collections/<int:collection_id>/boxes")
def list_collection_boxes(collection_id: int) -> dict:
    """Boxes by id (``category_id``, ``status``, ``source``, ``min_score``, ``max_score``), cursor = last id."""
    session = db()
    get_collection(session, collection_id)
    args = request.args
    try:
        rows, next_id = list_boxes(
            session, collection_id, limit=page_limit(), after_id=int_arg(args, "cursor"),
            category_id=int_arg(args, "category_id"), status=args.get("status") or None,
            min_score=float_arg(args, "min_score"), max_score=float_arg(args, "max_score"), source=args.get("source") or None,
        )
    except QueryError as exc:
        raise _query_error(exc) from exc
    return {"items": [box_json(b) for b in rows], "next_cursor": str(next_id) if next_id is not None else None}


@bp.post("/images/<int:image_id>/boxes")
def post_box(image_id: int) -> tuple[dict, int]:
    box = create_box(db(), image_id, json_body(), user_id=current_user.id)
    return box_json(box), 201


@bp.patch("/boxes/<int:box_id>")
def patch_box(box_id: int) -> dict:
    box = edit_box(db(), box_id, json_body(), user_id=current_user.id)
    return box_json(box)


@bp.delete("/boxes/<int:box_id>")
def delete_box_view(box_id: int) -> tuple[str, int]:
    if request.args.get("version") is None:
        raise ApiError(400, "version_required", "send ?version=<the box's current version>", field="version")
    version = parse_int(request.args["version"], "version", minimum=0)
    delete_box(db(), box_id, version)
    return "", 204


@bp.post("/images/<int:image_id>/accept-all")
def accept_all(image_id: int) -> dict:
    """Accept every proposed box of the image; body ``{"versions": {"<box id>": version}}`` as the client saw them."""
    session = db()
    versions = json_body().get("versions")
    if not isinstance(versions, dict):
        raise ApiError(400, "versions_required", "send {'versions': {box_id: version}} for the boxes you saw", field="versions")
    seen: dict[int, int] = {}
    for key, version in versions.items():
        field = f"versions.{str(key)[:40]}"
        seen[parse_int(key, field)] = require_int({field: version}, field, minimum=0)
    accepted, conflicts = accept_seen_boxes(session, image_id, seen, user_id=current_user.id)
    updated = [box_json(b) for b in accepted]
    if conflicts:
        raise Conflict("stale_edit", f"{len(conflicts)} box(es) changed meanwhile; reload the image", updated=updated, conflicts=conflicts)
    return {"updated": updated}


@bp.post("/collections/<int:collection_id>/bulk-accept")
def bulk_accept_view(collection_id: int) -> dict:
    """Accept all proposed CAM boxes of ``category_id`` with ``score >= min_score`` (undo: ``.../review-operations/<operation_id>/undo``)."""
    data = json_body()
    category_id = require_int(data, "category_id")
    min_score = require_number(data, "min_score")
    operation = bulk_accept(db(), collection_id, category_id, min_score, user_id=current_user.id)
    return {"accepted": operation.n_boxes, "operation_id": operation.id}


@bp.get("/models")
def list_models() -> dict:
    """Model versions (trained and built-in) an infer job can apply."""
    rows, next_cursor = id_page(db(), select(ModelVersion), ModelVersion.id, newest_first=True)
    return {"items": [model_version_json(m) for m in rows], "next_cursor": next_cursor}
