"""Which boxes an export or an evaluation takes, the COCO category ids, and streaming queries.

Box selections (``status``):

- ``"accepted"``: reviewed-good labels: CAM boxes accepted or edited by a reviewer, plus
  human-drawn boxes that are not rejected;
- ``"all"``: every non-rejected box that is not ground truth, proposed ones included;
- ``"ground_truth"``: the imported ground-truth boxes (never part of the other two).

Image selections: every usable image, or (``reviewed_only``) the images a person reviewed
(``worker.store.review_state.is_reviewed``): an unreviewed image has no trustworthy "no
objects here", so exports leave it out unless asked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import ColumnElement, Select, String, and_, or_, select, type_coerce
from sqlalchemy.orm import Session

from worker.store.models import Box, BoxSource, Category, Collection, ImageStatus, ReviewStatus
from worker.store.models import Image as ImageRow
from worker.store.review_state import is_reviewed

BOX_STATUSES = ("accepted", "all")
SELECTIONS = (*BOX_STATUSES, "ground_truth")
STREAM_CHUNK = 5_000


class FormatError(ValueError):
    """A bad export/import request (unknown format, status, collection, unreadable input)."""


_SOURCE = type_coerce(Box.source, String)  # compared with plain strings: no enum bind processing
_STATUS = type_coerce(Box.status, String)


def box_filter(selection: str) -> ColumnElement[bool]:
    """SQL condition on :class:`Box` for ``selection`` (see the module docstring)."""
    gt = BoxSource.ground_truth.value
    if selection == "ground_truth":
        return _SOURCE == gt
    not_gt = _SOURCE != gt
    if selection == "all":
        return and_(not_gt, _STATUS != ReviewStatus.rejected.value)
    if selection == "accepted":
        return and_(
            not_gt,
            or_(
                _STATUS.in_([ReviewStatus.accepted.value, ReviewStatus.edited.value]),
                and_(_SOURCE == BoxSource.human.value, _STATUS != ReviewStatus.rejected.value),
            ),
        )
    raise FormatError(f"unknown box status {selection!r}; expected one of {SELECTIONS}")


IMAGE_OK = type_coerce(ImageRow.status, String) == ImageStatus.ok.value


@dataclass(frozen=True)
class CategoryMap:
    """A collection's categories in id order; COCO ids are 1-based ranks, YOLO classes 0-based.

    Category ids never change and new categories get larger ids, so adding a category never
    renumbers the existing ones: the COCO id of a category is stable across exports.
    """

    ids: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def coco_id(self) -> dict[int, int]:
        """``{category row id: COCO category id (1..K)}``."""
        return {cid: rank + 1 for rank, cid in enumerate(self.ids)}

    def coco_categories(self) -> list[dict[str, Any]]:
        return [{"id": rank + 1, "name": name, "supercategory": "object"} for rank, name in enumerate(self.names)]


def load_collection(session: Session, collection_id: int) -> Collection:
    collection = session.get(Collection, collection_id)
    if collection is None:
        raise FormatError(f"no collection with id {collection_id}")
    return collection


def category_map(session: Session, collection_id: int) -> CategoryMap:
    rows = session.execute(select(Category.id, Category.name).where(Category.collection_id == collection_id).order_by(Category.id)).all()
    return CategoryMap(ids=tuple(r[0] for r in rows), names=tuple(r[1] for r in rows))


def stream(session: Session, stmt: Select[*tuple[Any, ...]], chunk: int = STREAM_CHUNK) -> Iterator[Sequence[Any]]:
    """Rows of ``stmt`` (a Core select) as plain tuples, fetched ``chunk`` at a time, on the
    session's connection and transaction, bypassing ORM loading.

    PostgreSQL (psycopg 3): a named server-side cursor with the binary protocol (floats
    arrive without text parsing, about 1.7x faster than SQLAlchemy's text-mode server
    cursor). The statement must bind plain values only (no enum members), as the statements
    of this module do. Other databases: SQLAlchemy's streaming result.
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        compiled = stmt.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
        raw = connection.connection.dbapi_connection
        assert isinstance(raw, psycopg.Connection)
        cursor = raw.cursor(name=f"camlabel_stream_{uuid.uuid4().hex[:12]}", binary=True)
        try:
            cursor.itersize = chunk
            cursor.execute(str(compiled), compiled.params)
            while rows := cursor.fetchmany(chunk):
                yield from rows
        finally:
            cursor.close()
        return
    result = connection.execute(stmt, execution_options={"stream_results": True, "yield_per": chunk})
    try:
        while rows := result.fetchmany(chunk):
            yield from rows
    finally:
        result.close()


def image_filter(collection_id: int, *, reviewed_only: bool = False) -> ColumnElement[bool]:
    """SQL condition on :class:`Image`: usable images of the collection, reviewed ones only if asked."""
    condition = and_(ImageRow.collection_id == collection_id, IMAGE_OK)
    return and_(condition, is_reviewed()) if reviewed_only else condition


def images_stmt(collection_id: int, *, reviewed_only: bool = False) -> Select[*tuple[Any, ...]]:
    """``(id, rel_path, width, height, storage_key)`` of the collection's usable images, by id."""
    return (
        select(ImageRow.id, ImageRow.rel_path, ImageRow.width, ImageRow.height, ImageRow.storage_key)
        .where(image_filter(collection_id, reviewed_only=reviewed_only))
        .order_by(ImageRow.id)
    )


# source/status as their stored strings: no enum conversion per row on 300k-row streams
BOX_COLUMNS = (Box.id, Box.category_id, Box.x1, Box.y1, Box.x2, Box.y2, Box.score, _SOURCE, _STATUS)


def boxes_stmt(collection_id: int, selection: str, *, model_version_id: int | None = None, reviewed_only: bool = False) -> Select[*tuple[Any, ...]]:
    """``(box id, category id, x1, y1, x2, y2, score, source, status, image id, width, height)``
    of the selected boxes on usable images, ordered by box id."""
    # an accepted, edited or drawn box is itself a person's decision: its image is reviewed, so
    # the per-row review check is needed only for selections that include proposals
    reviewed_only = reviewed_only and selection != "accepted"
    stmt = (
        select(*BOX_COLUMNS, ImageRow.id, ImageRow.width, ImageRow.height)
        .join(ImageRow, Box.image_id == ImageRow.id)
        .where(image_filter(collection_id, reviewed_only=reviewed_only), box_filter(selection))
        .order_by(Box.id)
    )
    if model_version_id is not None:
        stmt = stmt.where(Box.model_version_id == model_version_id)
    return stmt


def images_with_boxes_stmt(collection_id: int, selection: str, *, model_version_id: int | None = None, reviewed_only: bool = False) -> Select[*tuple[Any, ...]]:
    """Every usable image left-joined with its selected boxes, ordered by image then box:
    ``(image id, rel_path, width, height, storage_key, box id or None, category id, x1, y1, x2, y2, score, source, status)``."""
    on = and_(Box.image_id == ImageRow.id, box_filter(selection))
    if model_version_id is not None:
        on = and_(on, Box.model_version_id == model_version_id)
    return (
        select(ImageRow.id, ImageRow.rel_path, ImageRow.width, ImageRow.height, ImageRow.storage_key, *BOX_COLUMNS)
        .outerjoin(Box, on)
        .where(image_filter(collection_id, reviewed_only=reviewed_only))
        .order_by(ImageRow.id, Box.id)
    )


def clip_xyxy(x1: float, y1: float, x2: float, y2: float, width: int | None, height: int | None) -> tuple[float, float, float, float] | None:
    """Box ``(x1, y1, x2, y2)`` (pixels) clipped inside ``width x height``; ``None`` when degenerate.

    Coordinates are also put in order (``x1 <= x2``). Unknown sizes clip only at 0.
    """
    if x2 < x1:
        x1, x2 = x2, x1
    if y2 < y1:
        y1, y2 = y2, y1
    x1, y1 = max(0.0, x1), max(0.0, y1)
    if width:
        x2 = min(float(width), x2)
        x1 = min(x1, float(width))
    if height:
        y2 = min(float(height), y2)
        y1 = min(y1, float(height))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None
    return x1, y1, x2, y2
