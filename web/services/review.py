"""Review: a person's box edits, drawn boxes, deletions, bulk accepts and "no objects" marks.

Every edit names the row ``version`` the person saw; a row that moved on is a ``Conflict``
carrying the row as stored (``current``), never overwritten. The edit rules themselves (which
fields, the category of the same collection, ``edited`` for a change without a status) are the
store's (:func:`worker.store.bulk.update_box`); this module adds what a person may touch
(ground truth is read-only) and keeps boxes inside their image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from web.schemas import box_json
from web.services.collections import get_collection
from web.services.errors import Conflict, Forbidden, Invalid, NotFound
from web.validation import parse_int, require_int, require_number
from worker.store.bulk import (
    BoxNotFoundError,
    StaleEditError,
    WrongCategoryError,
    check_category,
    refresh_image_box_stats,
    update_box,
)
from worker.store.db import rows_matched
from worker.store.models import Box, BoxSource, Image, ReviewOperation, ReviewStatus
from worker.store.review_ops import OperationError
from worker.store.review_ops import bulk_accept as accept_by_score
from worker.store.review_state import clear_no_objects as clear_no_objects_mark
from worker.store.review_state import mark_reviewed
from worker.store.review_state import set_no_objects as set_no_objects_mark

GEOMETRY = ("x1", "y1", "x2", "y2")
STALE_MESSAGE = "this box was changed by someone else; reload to see the current version"


def get_image(session: Session, image_id: int) -> Image:
    """Image ``image_id`` (``NotFound`` when there is none)."""
    image = session.get(Image, image_id)
    if image is None:
        raise NotFound("not_found", f"no image {image_id}")
    return image


def edit_box(session: Session, box_id: int, data: Mapping[str, Any], *, user_id: int) -> Box:
    """Apply a reviewer's edit with optimistic concurrency (commits).

    ``data``: ``version`` (required, the row version the client saw), and any of ``status``
    (accepted/rejected/proposed/edited), ``category_id``, ``x1 y1 x2 y2`` (pixels, xyxy, clipped to
    the image). A geometry or category change without an explicit status sets ``edited``.
    A stale ``version`` is a ``Conflict`` with the current row, never overwriting it.
    """
    box = _editable_box(session, box_id)
    if "version" not in data:
        raise Invalid("version_required", "send the box's current 'version' with every edit", field="version")
    expected = require_int(data, "version", minimum=0)
    changes: dict[str, Any] = {}
    if "status" in data:
        changes["status"] = _status(data["status"])
    if "category_id" in data:
        changes["category_id"] = require_int(data, "category_id")
    if any(k in data for k in GEOMETRY):
        image = session.get(Image, box.image_id)
        coords = {k: require_number(data, k) if k in data else float(getattr(box, k)) for k in GEOMETRY}
        changes.update(_clip_box(coords, image))
    if not changes:
        raise Invalid("no_changes", "nothing to change: send status, category_id or x1/y1/x2/y2")
    changes["reviewer_id"] = user_id
    session.expunge(box)
    try:
        updated = update_box(session, box_id, expected, **changes)
    except StaleEditError as exc:
        session.rollback()
        raise _stale(session, box_id, STALE_MESSAGE) from exc
    except BoxNotFoundError as exc:
        session.rollback()
        raise _deleted(box_id) from exc
    except WrongCategoryError as exc:
        session.rollback()
        raise _wrong_category(exc) from exc
    except ValueError as exc:
        session.rollback()
        raise Invalid("bad_edit", str(exc)) from exc
    mark_reviewed(session, [updated.image_id], user_id=user_id)
    session.commit()
    return updated


def create_box(session: Session, image_id: int, data: Mapping[str, Any], *, user_id: int) -> Box:
    """A box drawn by a reviewer: source ``human``, status ``accepted``, no score (commits)."""
    image = get_image(session, image_id)
    if "category_id" not in data:
        raise Invalid("category_required", "a new box needs a category_id", field="category_id")
    category_id = require_int(data, "category_id")
    try:
        check_category(session, category_id, image.collection_id)
    except WrongCategoryError as exc:
        raise _wrong_category(exc) from exc
    coords = {k: require_number(data, k) for k in GEOMETRY}
    box = Box(image_id=image_id, category_id=category_id, score=None, source=BoxSource.human, status=ReviewStatus.accepted,
              reviewer_id=user_id, **_clip_box(coords, image))
    session.add(box)
    session.flush()
    refresh_image_box_stats(session, [image_id])
    mark_reviewed(session, [image_id], user_id=user_id)
    session.commit()
    return box


def delete_box(session: Session, box_id: int, version: int, *, user_id: int | None = None) -> None:
    """Delete a box if it is still at ``version`` (``Conflict`` otherwise); its image counts as reviewed."""
    box = _editable_box(session, box_id)
    image_id = box.image_id
    deleted = rows_matched(session, delete(Box).where(Box.id == box_id, Box.version == version, Box.source != BoxSource.ground_truth)
                           .execution_options(synchronize_session=False))
    if deleted != 1:
        session.rollback()
        if session.get(Box, box_id) is None:
            raise _deleted(box_id)
        raise _stale(session, box_id, STALE_MESSAGE)
    refresh_image_box_stats(session, [image_id])
    mark_reviewed(session, [image_id], user_id=user_id)
    session.commit()


def accept_seen_boxes(session: Session, image_id: int, versions: Mapping[int, int], *, user_id: int) -> tuple[list[Box], list[dict[str, Any] | None]]:
    """Accept the image's proposed boxes named in ``versions`` (``{box id: version}`` as the
    client saw them); boxes no longer proposed, ground truth or of another image are left alone.
    Returns ``(boxes accepted, current rows of the boxes that moved on)``."""
    proposed = set(session.scalars(select(Box.id).where(Box.image_id == image_id, Box.status == ReviewStatus.proposed,
                                                        Box.source != BoxSource.ground_truth)))
    accepted: list[Box] = []
    conflicts: list[dict[str, Any] | None] = []
    for box_id, version in versions.items():
        if box_id not in proposed:
            continue
        try:
            accepted.append(edit_box(session, box_id, {"version": version, "status": "accepted"}, user_id=user_id))
        except Conflict as exc:
            current = exc.extra.get("current")
            conflicts.append(current if isinstance(current, dict) else None)
    return accepted, conflicts


def bulk_accept(session: Session, collection_id: int, category_id: int, min_score: float, *, user_id: int) -> ReviewOperation:
    """Accept every still-proposed CAM box of ``category_id`` scoring ``>= min_score`` as one
    recorded operation (``n_boxes`` boxes; undone as one action). Each row's version goes up by
    one, so an open image view editing one of them gets a ``Conflict``."""
    get_collection(session, collection_id)
    try:
        operation = accept_by_score(session, collection_id, category_id, min_score, user_id=user_id)
    except OperationError as exc:
        session.rollback()
        raise Invalid("bad_value", str(exc)) from exc
    session.commit()
    return operation


def set_no_objects(session: Session, image_id: int, versions: Any, *, user_id: int | None) -> tuple[Image, list[Box]]:
    """Mark an image "no objects" (a reviewed negative): its boxes that are not rejected yet are
    rejected. ``versions`` (``{box id: version}`` as the client saw them, or ``None`` to take
    the boxes as they are now): a box missing from it or moved on is a ``Conflict`` and nothing
    changes. Returns the image and the boxes rejected (commits)."""
    image = get_image(session, image_id)
    seen: dict[int, int] | None = None
    if versions is not None:
        if not isinstance(versions, dict):
            raise Invalid("bad_value", "versions: send {box_id: version} for the boxes you saw", field="versions")
        seen = {parse_int(k, f"versions.{str(k)[:40]}"): parse_int(v, f"versions.{str(k)[:40]}", minimum=0)
                for k, v in versions.items()}  # bigint-bounded: a 400 naming the entry, never a database error
    try:
        rejected = set_no_objects_mark(session, image_id, user_id=user_id, versions=seen)
    except StaleEditError as exc:
        session.rollback()
        raise _stale(session, exc.box_id, f"box {exc.box_id} changed since you loaded the image; reload it and mark it again") from exc
    session.commit()
    boxes = list(session.scalars(select(Box).where(Box.id.in_(rejected)).order_by(Box.id))) if rejected else []
    session.refresh(image)
    return image, boxes


def clear_no_objects(session: Session, image_id: int, *, user_id: int | None) -> Image:
    """Take back a "no objects" mark (the image stays reviewed; commits)."""
    image = get_image(session, image_id)
    clear_no_objects_mark(session, image_id, user_id=user_id)
    session.commit()
    session.refresh(image)
    return image


def _editable_box(session: Session, box_id: int) -> Box:
    """The box a reviewer may change: ``NotFound`` when it is gone, ``Forbidden`` when it is ground truth."""
    box = session.get(Box, box_id)
    if box is None:
        raise _deleted(box_id)
    if box.source == BoxSource.ground_truth:
        raise Forbidden("ground_truth_read_only", f"box {box_id} is ground truth, which is read-only here; "
                        "import the ground truth again to change it")
    return box


def _deleted(box_id: int) -> NotFound:
    return NotFound("box_deleted", f"box {box_id} no longer exists: someone deleted it; reload the image", current=None)


def _stale(session: Session, box_id: int, message: str) -> Conflict:
    current = session.get(Box, box_id)
    return Conflict("stale_edit", message, current=box_json(current) if current is not None else None)


def _wrong_category(exc: WrongCategoryError) -> Invalid:
    return Invalid("bad_category", f"category {exc.category_id} does not belong to this image's collection")


def _status(raw: Any) -> ReviewStatus:
    values = [s.value for s in ReviewStatus]
    if not isinstance(raw, str) or raw not in values:
        raise Invalid("bad_status", f"status: must be one of {values}, not {str(raw)[:40]!r}", field="status")
    return ReviewStatus(raw)


def _clip_box(coords: dict[str, float], image: Image | None) -> dict[str, float]:
    x1, x2 = sorted((coords["x1"], coords["x2"]))
    y1, y2 = sorted((coords["y1"], coords["y2"]))
    if image is not None and image.width and image.height:
        x1, x2 = max(0.0, x1), min(float(image.width), x2)
        y1, y2 = max(0.0, y1), min(float(image.height), y2)
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise Invalid("bad_box", "a box must be at least 1 pixel wide and high inside the image")
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}
