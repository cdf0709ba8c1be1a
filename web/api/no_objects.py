"""Marking an image "no objects": a reviewed negative that exports keep as an image without boxes."""

from __future__ import annotations

from flask import request
from flask_login import current_user

from web.api import bp
from web.db import db
from web.errors import ApiError
from web.schemas import review_state_json
from web.services.review import clear_no_objects, set_no_objects


@bp.post("/images/<int:image_id>/no-objects")
def post_no_objects(image_id: int) -> dict:
    """Mark the image "no objects": body ``{"versions": {box_id: version}}`` of the boxes the client
    saw (optional); they are rejected, a box changed meanwhile is a 409 and nothing changes."""
    data = request.get_json(silent=True) if request.data else {}
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "send a JSON object body (or none)")
    image, boxes = set_no_objects(db(), image_id, data.get("versions"), user_id=current_user.id)
    return review_state_json(image, boxes)


@bp.delete("/images/<int:image_id>/no-objects")
def delete_no_objects(image_id: int) -> dict:
    """Take back the "no objects" mark; the image stays reviewed."""
    return review_state_json(clear_no_objects(db(), image_id, user_id=current_user.id))
