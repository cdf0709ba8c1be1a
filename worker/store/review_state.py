"""Whether a person reviewed an image: ``images.review_state`` and the SQL that exports use.

An image counts as reviewed once a person accepted, rejected, edited, drew or deleted one of
its boxes, or marked it "no objects" (a negative: none of the collection's classes is shown).
Review actions record it with :func:`mark_reviewed`; :func:`is_reviewed` also counts an image
whose boxes carry a person's decision, so a review path that forgot to record the state can
never turn reviewed boxes into an unexported image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import ColumnElement, String, exists, or_, select, type_coerce, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.util import identity_key

from worker.store.bulk import StaleEditError, refresh_image_box_stats
from worker.store.db import rows_matched
from worker.store.models import Box, BoxSource, Image, ImageReviewState, ReviewStatus
from worker.store.models.base import utcnow

_STATE = type_coerce(Image.review_state, String)
_SOURCE = type_coerce(Box.source, String)
_STATUS = type_coerce(Box.status, String)
_DECIDED = (ReviewStatus.accepted.value, ReviewStatus.rejected.value, ReviewStatus.edited.value)


def reviewed_box_exists() -> ColumnElement[bool]:
    """``EXISTS`` a box of the image (not ground truth) that carries a person's decision.

    The box is an alias, so the condition also works in queries that select boxes themselves."""
    box = aliased(Box, name="decided_box")
    source, status = type_coerce(box.source, String), type_coerce(box.status, String)
    return exists(
        select(box.id).where(
            box.image_id == Image.id,
            source != BoxSource.ground_truth.value,
            or_(status.in_(_DECIDED), source == BoxSource.human.value),
        ).correlate(Image)
    )


def is_reviewed() -> ColumnElement[bool]:
    """SQL condition on :class:`Image`: a person reviewed it (see the module docstring)."""
    return or_(_STATE != ImageReviewState.unreviewed.value, reviewed_box_exists())


def mark_reviewed(session: Session, image_ids: Iterable[int], *, user_id: int | None) -> None:
    """Record that a person reviewed these images by acting on their boxes.

    A later box action on a ``no_objects`` image (drawing a box, say) makes it plain
    ``reviewed``: its boxes say what it shows from then on."""
    ids = sorted({int(i) for i in image_ids})
    if not ids:
        return
    session.execute(
        update(Image)
        .where(Image.id.in_(ids), _STATE != ImageReviewState.reviewed.value)
        .values(review_state=ImageReviewState.reviewed, reviewed_at=utcnow(), reviewed_by_id=user_id)
        .execution_options(synchronize_session=False)
    )
    _expire(session, ids)


def set_no_objects(session: Session, image_id: int, *, user_id: int | None, versions: Mapping[int, int] | None = None) -> list[int]:
    """Mark an image "no objects": every box of it that is not ground truth and not rejected yet
    is rejected (row version + 1), and its state becomes ``no_objects``. Not committed.

    Args:
        versions: ``{box id: version}`` as the caller saw them. When given, every box to reject
            must be listed at its current version, else :class:`StaleEditError` and nothing is
            written (the caller rolls back); ``None`` rejects whatever is there now.

    Returns: the ids of the boxes rejected.
    """
    rows = session.execute(
        select(Box.id, Box.version).where(
            Box.image_id == image_id, _SOURCE != BoxSource.ground_truth.value, _STATUS != ReviewStatus.rejected.value
        ).order_by(Box.id)
    ).all()
    rejected: list[int] = []
    for box_id, version in rows:
        expected = version if versions is None else versions.get(box_id)
        if expected is None:  # a box the caller never saw (drawn or proposed since)
            raise StaleEditError(box_id, 0, version)
        matched = rows_matched(
            session,
            update(Box).where(Box.id == box_id, Box.version == int(expected))
            .values(status=ReviewStatus.rejected.value, reviewer_id=user_id, version=Box.version + 1, updated_at=utcnow())
            .execution_options(synchronize_session=False),
        )
        if matched != 1:
            raise StaleEditError(box_id, int(expected), version)
        rejected.append(box_id)
    session.execute(
        update(Image).where(Image.id == image_id)
        .values(review_state=ImageReviewState.no_objects, reviewed_at=utcnow(), reviewed_by_id=user_id)
        .execution_options(synchronize_session=False)
    )
    if rejected:
        refresh_image_box_stats(session, [image_id])
        for box_id in rejected:
            box = session.identity_map.get(identity_key(Box, box_id))
            if box is not None:
                session.expire(box)
    _expire(session, [image_id])
    return rejected


def clear_no_objects(session: Session, image_id: int, *, user_id: int | None) -> None:
    """Take back a "no objects" mark: the image stays reviewed, its boxes keep their state."""
    session.execute(
        update(Image).where(Image.id == image_id, _STATE == ImageReviewState.no_objects.value)
        .values(review_state=ImageReviewState.reviewed, reviewed_at=utcnow(), reviewed_by_id=user_id)
        .execution_options(synchronize_session=False)
    )
    _expire(session, [image_id])


def _expire(session: Session, image_ids: Iterable[int]) -> None:
    for image_id in image_ids:
        image = session.identity_map.get(identity_key(Image, image_id))
        if image is not None:
            session.expire(image, ["review_state", "reviewed_at", "reviewed_by_id"])
