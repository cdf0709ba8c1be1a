"""Review pages: the thumbnail grid (filters, score sort, keyset pages with page numbers; totals,
review progress, selection and bulk triage in grid.js after the page; concept-map heatmaps) and
the single-image editor (Annotorious; edits go to the JSON API with the row version)."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup, escape
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from web.db import db
from web.errors import ApiError
from web.queries import (
    Cursor,
    GridImage,
    ImageFilter,
    QueryError,
    boxes_for_images,
    collection_head,
    concept_maps_for_images,
    count_images,
    cursor_at,
    filter_from_args,
    grid_page,
    neighbour,
)
from web.schemas import box_json
from web.services.collections import get_collection
from worker.store.models import Image, ImageTag

bp = Blueprint("review", __name__, url_prefix="/review")


@bp.before_request
def _require_login() -> BaseResponse | None:
    if current_user.is_authenticated:
        return None
    return redirect(url_for("dashboard.login", next=request.full_path if request.query_string else request.path))


_MAX_PAGE = 2**31 // 1000  # pages of PAGE_SIZE rows: the row offset stays far inside bigint


def _page_number(name: str) -> int | None:
    """A positive page number from the query string (``None`` when absent); 400 naming ``name`` otherwise."""
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_query", f"{name} must be a page number, not {raw[:40]!r}", field=name) from exc
    if not 1 <= value <= _MAX_PAGE:
        raise ApiError(400, "bad_query", f"{name} must be between 1 and {_MAX_PAGE}", field=name)
    return value


@bp.get("/collections/<int:collection_id>")
def grid(collection_id: int) -> str:
    """One page of thumbnails: ``cursor`` = the page after that row, ``before`` = the page before it,
    ``goto`` = page number N (its first row found on the index); ``page`` carries the number shown."""
    session = db()
    head = collection_head(session, collection_id)
    if head is None:
        raise ApiError(404, "not_found", f"no collection {collection_id}")
    limit = int(current_app.config["PAGE_SIZE"])
    goto = _page_number("goto")
    number = _page_number("page") or 1
    try:
        f = filter_from_args(collection_id, request.args)
        if goto is not None:
            number, after = _jump(session, f, goto, limit)
            before = None
        else:
            after = Cursor.decode(request.args["cursor"]) if request.args.get("cursor") else None
            before = Cursor.decode(request.args["before"]) if request.args.get("before") else None
        page = grid_page(session, f, limit=limit, after=after, before=before)
    except QueryError as exc:
        raise ApiError(400, "bad_query", str(exc)) from exc
    if page.first:
        number = 1
    query = urlencode(f.query_args())
    grid_url = f"{url_for('review.grid', collection_id=collection_id)}?{query}"
    href_query = escape(query)
    return render_template(
        "review/grid.html", collection=head, filter=f, thumbs=[_thumb_html(image, href_query) for image in page.items],
        first_url=None if page.first else grid_url,
        prev_url=f"{grid_url}&before={page.prev_cursor}&page={max(1, number - 1)}" if page.prev_cursor else None,
        next_url=f"{grid_url}&cursor={page.next_cursor}&page={number + 1}" if page.next_cursor else None,
        grid_url=grid_url, page_number=number, page_size=limit,
        count_url=f"{url_for('api.image_count', collection_id=collection_id)}?{query}",
    )


def _jump(session: Session, f: ImageFilter, goto: int, limit: int) -> tuple[int, Cursor | None]:
    """Page ``goto``'s number and the cursor its rows start after; past the end: the last page.

    The cursor is found with an OFFSET over index columns only, so a jump costs one index
    range scan; only a jump past the end counts the matches."""
    after = cursor_at(session, f, (goto - 1) * limit)
    if after is not None or goto == 1:
        return goto, after
    total, _exact = count_images(session, f)
    last = max(1, math.ceil(total / limit))
    return last, cursor_at(session, f, (last - 1) * limit)


def _thumb_html(image: GridImage, href_query: str) -> Markup:
    """One thumbnail's ``<div class="thumb">``: the link to the image (frame, heatmap canvas that
    grid.js paints from the concept map, SVG boxes, caption) and the selection box.

    Built here rather than in Jinja: 48 thumbnails x ~10 autoescaped template expressions
    cost ~60% more CPU than these f-strings. Text from users (``rel_path``) and stored keys
    go through ``escape``; ``href_query`` is already escaped; ids, sizes and box numbers are
    numbers, and box statuses are enum values."""
    name = escape(image.rel_path)
    overlay = (f'<canvas class="overlay" data-map="/api/v1/maps/{escape(image.map_key)}" data-width="{image.width or 0:d}" '
               f'data-height="{image.height or 0:d}"></canvas>' if image.map_key else "")
    svg = ""
    if image.width and image.height:
        rects = "".join(
            f'<rect class="box status-{status.value}" x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" '
            f'height="{y2 - y1:.1f}" vector-effect="non-scaling-stroke"></rect>'
            for x1, y1, x2, y2, status in image.boxes)
        svg = f'<svg viewBox="0 0 {image.width:d} {image.height:d}" preserveAspectRatio="none" aria-hidden="true">{rects}</svg>'
    score = f"{image.min_score:.2f}" if image.min_score is not None else "no box"
    return Markup(
        f'<div class="thumb" data-image-id="{image.id:d}"><a class="open" href="/review/images/{image.id:d}?{href_query}">'
        f'<div class="frame"><img src="/blobs/{escape(image.thumb_key or image.storage_key)}" alt="{name}" loading="lazy">{overlay}{svg}</div>'
        f'<div class="caption"><span class="name">{name}</span> <span class="score">{score}</span></div></a>'
        f'<input type="checkbox" class="pick" aria-label="select {name}"></div>\n'
    )


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
    args: dict[str, Any] = f.query_args()  # url_for's keyword values
    nxt = neighbour(session, f, image, forward=True)
    prev = neighbour(session, f, image, forward=False)
    boxes = boxes_for_images(session, [image_id])[image_id]
    maps = concept_maps_for_images(session, [image_id])[image_id]
    categories = [{"id": c.id, "name": c.name} for c in collection.categories]
    tags = list(session.scalars(select(ImageTag.category_id).where(ImageTag.image_id == image_id).order_by(ImageTag.category_id)))
    data = {
        "image": {"id": image.id, "width": image.width, "height": image.height, "rel_path": image.rel_path, "tags": tags},
        "collection_id": collection.id,
        "next_src": f"/blobs/{nxt.storage_key}" if nxt is not None and nxt.storage_key else None,
        "boxes": [box_json(b) for b in boxes],
        "categories": categories,
        "maps": [{"category_id": m.category_id, "model_version_id": m.model_version_id, "url": f"/api/v1/maps/{m.raw_key}"} for m in maps],
        "next_url": url_for("review.image_view", image_id=nxt.id, **args) if nxt else None,
        "prev_url": url_for("review.image_view", image_id=prev.id, **args) if prev else None,
        "grid_url": url_for("review.grid", collection_id=collection.id, **args),
    }
    return render_template("review/image.html", collection=collection, image=image, data=data, categories=categories)
