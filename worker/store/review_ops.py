"""Bulk review writes that can be undone as one action.

A bulk write (accept the proposed boxes of a class above a score, accept or reject the
proposed boxes of a grid selection) changes each box with the store's optimistic versions
(``version = version + 1``, guarded on the box still being ``proposed``), marks the images
reviewed (``worker.store.review_state``) and records, per box, its status and reviewer before
and the version it left the box at (:class:`~worker.store.models.review.ReviewOperationBox`),
and per image the review state it had before. :func:`undo_operation` puts the boxes back in
one statement, only where a box is still at that version: a box someone edited since keeps
the newer edit and is reported as skipped. An image goes back to its previous review state
when none of its boxes carries a person's decision any more. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from worker.store.bulk import refresh_image_box_stats
from worker.store.dialect import chunked
from worker.store.models import Box, BoxSource, Category, Image, ImageReviewState, ReviewStatus, table_of
from worker.store.models.base import utcnow
from worker.store.models.review import ReviewOperation, ReviewOperationBox, ReviewOperationImage
from worker.store.review_state import mark_reviewed, reviewed_box_exists

boxes_t = table_of(Box)
images_t = table_of(Image)
op_boxes_t = table_of(ReviewOperationBox)
op_images_t = table_of(ReviewOperationImage)
operations_t = table_of(ReviewOperation)

#: Statuses a bulk write may set.
BULK_STATUSES = (ReviewStatus.accepted, ReviewStatus.rejected)
#: Images one selection write may name.
MAX_SELECTION = 1000


class OperationError(ValueError):
    """A bulk write or undo that cannot be done (bad argument, unknown or undone operation)."""


@dataclass(frozen=True)
class ReviewedAtScore:
    """How a person judged, box by box, a class's CAM boxes scoring at least a bulk accept's
    minimum: ``accepted`` as proposed, ``edited``, ``rejected``. Boxes still as a bulk write (bulk
    accept, a grid selection) left them are not counted: nobody looked at those one by one."""

    accepted: int = 0
    edited: int = 0
    rejected: int = 0

    @property
    def reviewed(self) -> int:
        return self.accepted + self.edited + self.rejected


@dataclass(frozen=True)
class BulkPreview:
    """What a bulk accept would change: ``n_boxes`` boxes on ``n_images`` images, and up to
    ``limit`` sample images (the lowest-scoring boxes first: the ones worth a look).

    ``expected_right``: the sum of their scores, each an estimate of the probability that its box
    is right (IoU >= 0.5 with the object; :mod:`camcore.boxes.score`), so the number of right
    boxes the accept is expected to hold. ``reviewed``: the check of that estimate against the
    reviewer so far (:class:`ReviewedAtScore`, same class and minimum score)."""

    n_boxes: int
    n_images: int
    samples: list[dict[str, Any]]
    expected_right: float = 0.0
    reviewed: ReviewedAtScore = ReviewedAtScore()


@dataclass(frozen=True)
class UndoResult:
    """``restored``: boxes put back; ``skipped``: boxes edited or deleted since (left as they are)."""

    operation_id: int
    restored: int
    skipped: int


def _bulk_accept_targets(collection_id: int, category_id: int, min_score: float) -> Any:
    """Conditions on ``boxes`` of the proposed CAM boxes of a class scoring at least ``min_score``."""
    in_collection = select(images_t.c.id).where(images_t.c.collection_id == collection_id)
    return and_(boxes_t.c.category_id == category_id, boxes_t.c.status == ReviewStatus.proposed.value,
                boxes_t.c.source == BoxSource.cam.value, boxes_t.c.score >= min_score, boxes_t.c.image_id.in_(in_collection))


def _check_category(session: Session, collection_id: int, category_id: int) -> None:
    owner = session.scalar(select(Category.collection_id).where(Category.id == category_id))
    if owner != collection_id:
        raise OperationError(f"category {category_id} is not a category of collection {collection_id}")


def _check_score(min_score: float) -> float:
    value = float(min_score)
    if not 0.0 <= value <= 1.0:
        raise OperationError(f"min_score must lie in [0, 1], not {min_score!r}")
    return value


def preview_bulk_accept(session: Session, collection_id: int, category_id: int, min_score: float, *, limit: int = 12) -> BulkPreview:
    """Count the boxes :func:`bulk_accept` would accept and pick sample images to show."""
    _check_category(session, collection_id, category_id)
    where = _bulk_accept_targets(collection_id, category_id, _check_score(min_score))
    totals = session.execute(
        select(func.count().label("boxes"), func.count(boxes_t.c.image_id.distinct()).label("images"),
               func.coalesce(func.sum(boxes_t.c.score), 0.0).label("expected"))
        .select_from(boxes_t).where(where)).one()
    lowest = (select(boxes_t.c.image_id, func.min(boxes_t.c.score).label("score")).where(where)
              .group_by(boxes_t.c.image_id).order_by(func.min(boxes_t.c.score), boxes_t.c.image_id).limit(limit).subquery())
    rows = session.execute(
        select(images_t.c.id, images_t.c.rel_path, images_t.c.thumb_key, images_t.c.storage_key, lowest.c.score)
        .join(lowest, lowest.c.image_id == images_t.c.id).order_by(lowest.c.score, images_t.c.id)).all()
    samples = [{"id": r.id, "rel_path": r.rel_path, "thumb_key": r.thumb_key or r.storage_key, "score": r.score} for r in rows]
    return BulkPreview(int(totals.boxes), int(totals.images), samples, float(totals.expected or 0.0),
                       reviewed_at_score(session, collection_id, category_id, min_score))


def reviewed_at_score(session: Session, collection_id: int, category_id: int, min_score: float) -> ReviewedAtScore:
    """:class:`ReviewedAtScore` of ``category_id``'s CAM boxes scoring at least ``min_score``."""
    left_by_operation = (
        select(op_boxes_t.c.box_id).join(operations_t, operations_t.c.id == op_boxes_t.c.operation_id)
        .where(op_boxes_t.c.box_id == boxes_t.c.id, op_boxes_t.c.version_after == boxes_t.c.version,
               operations_t.c.undone_at.is_(None)))
    in_collection = select(images_t.c.id).where(images_t.c.collection_id == collection_id)
    judged = (ReviewStatus.accepted.value, ReviewStatus.edited.value, ReviewStatus.rejected.value)
    rows = session.execute(
        select(boxes_t.c.status, func.count().label("n")).where(
            boxes_t.c.category_id == category_id, boxes_t.c.source == BoxSource.cam.value,
            boxes_t.c.score >= _check_score(min_score), boxes_t.c.status.in_(judged), boxes_t.c.image_id.in_(in_collection),
            ~left_by_operation.exists())
        .group_by(boxes_t.c.status)).all()
    counts = {ReviewStatus(row.status).value: int(row.n) for row in rows}
    return ReviewedAtScore(counts.get("accepted", 0), counts.get("edited", 0), counts.get("rejected", 0))


def bulk_accept(session: Session, collection_id: int, category_id: int, min_score: float, *, user_id: int | None) -> ReviewOperation:
    """Accept every proposed CAM box of ``category_id`` scoring ``>= min_score`` (one undoable operation)."""
    _check_category(session, collection_id, category_id)
    score = _check_score(min_score)
    return _apply(session, collection_id, _bulk_accept_targets(collection_id, category_id, score), ReviewStatus.accepted,
                  user_id=user_id, kind="bulk_accept", params={"category_id": category_id, "min_score": score})


def review_selection(session: Session, collection_id: int, image_ids: Sequence[int], status: ReviewStatus | str, *,
                     user_id: int | None) -> ReviewOperation:
    """Set ``status`` (accepted or rejected) on the proposed boxes of the selected images
    (boxes of other collections' images are never touched)."""
    try:
        target = ReviewStatus(status)
    except ValueError as exc:
        raise OperationError(f"status must be one of {[s.value for s in BULK_STATUSES]}, not {status!r}") from exc
    if target not in BULK_STATUSES:
        raise OperationError(f"status must be one of {[s.value for s in BULK_STATUSES]}, not {target.value!r}")
    ids = sorted({int(i) for i in image_ids})
    if not ids:
        raise OperationError("select at least one image")
    if len(ids) > MAX_SELECTION:
        raise OperationError(f"select at most {MAX_SELECTION} images at once, not {len(ids)}")
    in_collection = select(images_t.c.id).where(images_t.c.collection_id == collection_id, images_t.c.id.in_(ids))
    where = and_(boxes_t.c.image_id.in_(in_collection), boxes_t.c.source != BoxSource.ground_truth.value,
                 boxes_t.c.status == ReviewStatus.proposed.value)
    return _apply(session, collection_id, where, target, user_id=user_id, kind="selection", params={"image_ids": ids})


def _apply(session: Session, collection_id: int, where: Any, status: ReviewStatus, *, user_id: int | None, kind: str,
           params: Mapping[str, Any]) -> ReviewOperation:
    """Set ``status`` on the proposed boxes matching ``where`` and record what they were."""
    before = session.execute(select(boxes_t.c.id, boxes_t.c.image_id, boxes_t.c.reviewer_id).where(where).order_by(boxes_t.c.id)).all()
    operation = ReviewOperation(collection_id=collection_id, user_id=user_id, kind=kind, status=status, params=dict(params), n_boxes=0)
    session.add(operation)
    session.flush()
    if not before:
        return operation
    reviewer = {row.id: row.reviewer_id for row in before}
    image_ids = sorted({row.image_id for row in before})
    # Lock order image -> box, as update_box and replace_boxes take them.
    for chunk in chunked(image_ids):
        session.execute(select(images_t.c.id).where(images_t.c.id.in_(chunk)).order_by(images_t.c.id).with_for_update())
    records: list[dict[str, Any]] = []
    for chunk in chunked([row.id for row in before]):
        changed = session.execute(
            update(boxes_t)
            .where(boxes_t.c.id.in_(chunk), boxes_t.c.status == ReviewStatus.proposed.value)
            .values(status=status.value, reviewer_id=user_id, version=boxes_t.c.version + 1, updated_at=utcnow())
            .returning(boxes_t.c.id, boxes_t.c.version)).all()
        records.extend({"operation_id": operation.id, "box_id": box_id, "previous_status": ReviewStatus.proposed.value,
                        "previous_reviewer_id": reviewer[box_id], "version_after": version} for box_id, version in changed)
    for chunk in chunked(records):
        session.execute(op_boxes_t.insert(), list(chunk))
    operation.n_boxes = len(records)
    changed_images = sorted({row.image_id for row in before if row.id in {r["box_id"] for r in records}})
    states: list[dict[str, Any]] = []
    for chunk in chunked(changed_images):
        states.extend({"operation_id": operation.id, "image_id": image_id, "previous_state": state}
                      for image_id, state in session.execute(
                          select(images_t.c.id, images_t.c.review_state)
                          .where(images_t.c.id.in_(chunk), images_t.c.review_state != ImageReviewState.reviewed.value)))
    for chunk in chunked(states):
        session.execute(op_images_t.insert(), list(chunk))
    mark_reviewed(session, changed_images, user_id=user_id)
    refresh_image_box_stats(session, image_ids)
    _expire_boxes(session, {r["box_id"] for r in records})
    return operation


def undo_operation(session: Session, operation_id: int, *, collection_id: int | None = None) -> UndoResult:
    """Restore the status and reviewer each box had before the operation, where the box is still
    at the version the operation left it at; mark the operation undone (an operation is undone once)."""
    operation = session.get(ReviewOperation, operation_id, with_for_update=True)
    if operation is None or (collection_id is not None and operation.collection_id != collection_id):
        raise OperationError(f"no review operation {operation_id}")
    if operation.undone_at is not None:
        raise OperationError(f"review operation {operation_id} was already undone")
    recorded = op_boxes_t.c
    image_ids: list[int] = sorted(session.scalars(
        select(boxes_t.c.image_id).join(op_boxes_t, recorded.box_id == boxes_t.c.id)
        .where(recorded.operation_id == operation_id).distinct()))
    for chunk in chunked(image_ids):
        session.execute(select(images_t.c.id).where(images_t.c.id.in_(chunk)).order_by(images_t.c.id).with_for_update())

    def _previous(column: Any) -> Any:
        return (select(column).where(recorded.operation_id == operation_id, recorded.box_id == boxes_t.c.id)
                .correlate(boxes_t).scalar_subquery())

    still = select(recorded.box_id).where(recorded.operation_id == operation_id, recorded.version_after == boxes_t.c.version).correlate(boxes_t)
    restored: Sequence[int] = session.execute(
        update(boxes_t).where(boxes_t.c.id.in_(still))
        .values(status=_previous(recorded.previous_status), reviewer_id=_previous(recorded.previous_reviewer_id),
                version=boxes_t.c.version + 1, updated_at=utcnow())
        .returning(boxes_t.c.id)).scalars().all()
    operation.undone_at = utcnow()
    # Images the operation made "reviewed" go back to their state before, unless a person's
    # decision is still on one of their boxes (an edit made since, or a box the undo skipped).
    previous = (select(op_images_t.c.previous_state)
                .where(op_images_t.c.operation_id == operation_id, op_images_t.c.image_id == images_t.c.id)
                .correlate(images_t).scalar_subquery())
    touched = select(op_images_t.c.image_id).where(op_images_t.c.operation_id == operation_id)
    session.execute(update(images_t)
                    .where(images_t.c.id.in_(touched), images_t.c.review_state == ImageReviewState.reviewed.value, ~reviewed_box_exists())
                    .values(review_state=previous, reviewed_at=None, reviewed_by_id=None))
    refresh_image_box_stats(session, image_ids)
    _expire_boxes(session, set(restored))
    return UndoResult(operation_id, restored=len(restored), skipped=operation.n_boxes - len(restored))


def _expire_boxes(session: Session, ids: set[int]) -> None:
    """Expire loaded boxes with these ids and every loaded image (Core wrote under them)."""
    for obj in list(session.identity_map.values()):
        if (isinstance(obj, Box) and obj.id in ids) or isinstance(obj, Image):
            session.expire(obj)
