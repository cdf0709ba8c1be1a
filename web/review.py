"""Review pages: the thumbnail grid (filters, score sort, keyset pages, concept-map overlays)
and the single-image editor (Annotorious; edits go to the JSON API with the row version)."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup

from web.db import db
from web.errors import ApiError
from web.queries import (
    Cursor, QueryError, box_rects_for_images, boxes_for_images, filter_from_args, list_images, neighbour, overlay_keys_for_images,
    overlays_for_images,
)
from web.services import box_json, get_collection
from worker.store.models import Image, ReviewStatus

bp = Blueprint("review", __name__, url_prefix="/review")


@bp.before_request
def _require_login() -> Response | None:
    if current_user.is_authenticated:
        return None
    return redirect(url_for("dashboard.login", next=request.full_path if request.query_string else request.path))


@bp.get("/collections/<int:collection_id>")
def grid(collection_id: int) -> str:
    session = db()
    collection = get_collection(session, collection_id)
    try:
        f = filter_from_args(collection_id, request.args)
        cursor = Cursor.decode(request.args["cursor"]) if request.args.get("cursor") else None
    except QueryError as exc:
        raise ApiError(400, "bad_query", str(exc)) from exc
    page = list_images(session, f, limit=int(current_app.config["PAGE_SIZE"]), after=cursor)
    ids = [i.id for i in page.items]
    boxes = {image_id: _svg_rects(rows) for image_id, rows in box_rects_for_images(session, ids).items()}
    overlays = overlay_keys_for_images(session, ids)
    categories = {c.id: c.name for c in collection.categories}
    return render_template("review/grid.html", collection=collection, images=page.items, boxes=boxes, overlays=overlays,
                           categories=categories, filter=f, query=urlencode(f.query_args()), next_cursor=page.next_cursor,
                           has_cursor=cursor is not None)


def _svg_rects(rows: list) -> Markup:  # type: ignore[type-arg]
    """SVG ``<rect>`` elements of one thumbnail's boxes (xyxy pixels -> x, y, width, height).

    Built here rather than in Jinja: every value is a number or an enum member from the
    database, so nothing needs escaping, and the grid renders 48 images x ~3 boxes per page."""
    return Markup("".join(
        f'<rect class="box status-{ReviewStatus(r.status).value}" x="{r.x1:.1f}" y="{r.y1:.1f}" width="{r.x2 - r.x1:.1f}" '
        f'height="{r.y2 - r.y1:.1f}" vector-effect="non-scaling-stroke"></rect>'
        for r in rows
    ))


@bp.get("/images/<int:image_id>")
def image_view(image_id: int) -> str:
    session = db()
    image = session.get(Image, image_id)
    if image is None:
        abort(404)
    collection = get_collection(session, image.collection_id)
    try:
        f = filter_from_args(image.collection_id, request.args)
    except QueryError as exc:
        raise ApiError(400, "bad_query", str(exc)) from exc
    args = f.query_args()
    nxt = neighbour(session, f, image, forward=True)
    prev = neighbour(session, f, image, forward=False)
    boxes = boxes_for_images(session, [image_id])[image_id]
    maps = overlays_for_images(session, [image_id])[image_id]
    categories = [{"id": c.id, "name": c.name} for c in collection.categories]
    data = {
        "image": {"id": image.id, "width": image.width, "height": image.height, "rel_path": image.rel_path},
        "boxes": [box_json(b) for b in boxes],
        "categories": categories,
        "overlays": [{"category_id": m.category_id, "model_version_id": m.model_version_id, "url": f"/blobs/{m.overlay_key}"} for m in maps],
        "next_url": url_for("review.image_view", image_id=nxt.id, **args) if nxt else None,
        "prev_url": url_for("review.image_view", image_id=prev.id, **args) if prev else None,
        "grid_url": url_for("review.grid", collection_id=collection.id, **args),
    }
    return render_template("review/image.html", collection=collection, image=image, data=data, categories=categories)
