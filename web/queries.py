"""Read queries of the review tool: filtered, keyset-paginated image lists that stay on the
``images (collection_id, min_score, id)`` index at 100k images, and box lists.

Order ``score``: lowest box score first (``min_score`` ascending, then ``id``), images with no
box (``min_score IS NULL``) last; ``-score``: highest lowest-box-score first (``min_score, id``
descending), no box last. ``images.min_score`` is the lowest ``boxes.score`` of the image's
boxes, the probability that its least certain box is right. Order ``id``: import order. A cursor names the last row seen
(next page) or the first one (previous page, scanned in the reversed order); each page is one or
two index range scans (non-null scores, then the null tail), never an OFFSET.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Select, String, cast, exists, func, select, tuple_
from sqlalchemy.orm import Session

from worker.store.models import (
    Box,
    BoxSource,
    Category,
    Collection,
    ConceptMap,
    Image,
    ImageReviewState,
    ImageStatus,
    ImageTag,
    ReviewStatus,
)

SORTS = ("score", "-score", "id")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # bigint: larger ids match no row (and the driver refuses them)

_Number = TypeVar("_Number", int, float)
#: Totals above this are shown as "at least": counting every match of a filter on a box
#: subquery would scan the whole collection.
COUNT_CAP = 10_000
REVIEW_STATUSES = tuple(s.value for s in ReviewStatus)
IMAGE_STATES = tuple(s.value for s in ImageReviewState)
_STATUS_BY_VALUE = {s.value: s for s in ReviewStatus}


class QueryError(ValueError):
    """A filter or cursor value that cannot be used (answered as 400)."""


@dataclass(frozen=True)
class ImageFilter:
    """Filters of the review grid.

    ``status``: images with at least one box in that review status (``proposed`` = still to review).
    ``min_score``/``max_score``: bounds on the image's lowest box score (``images.min_score``).
    ``no_box``: only images with no proposed/human box.
    ``review``: only images in that review state (``unreviewed`` = the "to review" queue,
    ``reviewed``, ``no_objects``; ``images.review_state``, on an index).
    ``disagree``: only tagged images whose boxes disagree with their tags: a box (not rejected)
    of a class the image is not tagged with, or a tag with no such box.
    """

    collection_id: int
    category_id: int | None = None
    status: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    no_box: bool = False
    review: str | None = None
    disagree: bool = False
    sort: str = "score"

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise QueryError(f"sort must be one of {SORTS}, not {self.sort!r}")
        if self.status is not None and self.status not in REVIEW_STATUSES:
            raise QueryError(f"status must be one of {REVIEW_STATUSES}, not {self.status!r}")
        if self.review is not None and self.review not in IMAGE_STATES:
            raise QueryError(f"review must be one of {IMAGE_STATES}, not {self.review!r}")

    def query_args(self) -> dict[str, str]:
        """The filter as URL query arguments (for links that keep it)."""
        args: dict[str, str] = {"sort": self.sort}
        if self.category_id is not None:
            args["category_id"] = str(self.category_id)
        if self.status:
            args["status"] = self.status
        if self.min_score is not None:
            args["min_score"] = f"{self.min_score:g}"
        if self.max_score is not None:
            args["max_score"] = f"{self.max_score:g}"
        if self.no_box:
            args["no_box"] = "1"
        if self.review:
            args["review"] = self.review
        if self.disagree:
            args["disagree"] = "1"
        return args


@dataclass(frozen=True)
class Cursor:
    """Position after (or before) a row: its ``min_score`` (``None`` for no box) and ``id``."""

    score: float | None
    id: int

    def encode(self) -> str:
        return base64.urlsafe_b64encode(json.dumps([self.score, self.id]).encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            score, ident = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            cursor = cls(None if score is None else float(score), int(ident))
        except (ValueError, TypeError, OverflowError) as exc:
            raise QueryError(f"bad cursor {text[:40]!r}") from exc
        if not _INT64_MIN <= cursor.id <= _INT64_MAX or (cursor.score is not None and not math.isfinite(cursor.score)):
            raise QueryError(f"bad cursor {text[:40]!r}: out of range")
        return cursor

    @classmethod
    def of(cls, image: Image) -> Cursor:
        return cls(image.min_score, image.id)


@dataclass
class Page:
    """A page of ORM images (the API list) and the cursor of the next one."""

    items: list[Image]
    next_cursor: str | None
    extra: dict[str, object] = field(default_factory=dict)


def filter_from_args(collection_id: int, args: Mapping[str, str]) -> ImageFilter:
    """Build an :class:`ImageFilter` from request args (``category_id``, ``status``, ``min_score``,
    ``max_score``, ``no_box``, ``review``, ``disagree``, ``sort``); raises :class:`QueryError` naming the bad argument."""
    get = args.get

    def _num(name: str, kind: type[_Number]) -> _Number | None:
        value = get(name)
        if not value:
            return None
        try:
            number = kind(value)
        except (ValueError, OverflowError) as exc:
            raise QueryError(f"{name} must be a number, not {str(value)[:40]!r}") from exc
        if kind is int and not _INT64_MIN <= number <= _INT64_MAX:
            raise QueryError(f"{name} must be between {_INT64_MIN} and {_INT64_MAX}")
        if kind is float and not math.isfinite(number):
            raise QueryError(f"{name} must be a finite number")
        return number

    return ImageFilter(
        collection_id=collection_id,
        category_id=_num("category_id", int),
        status=get("status") or None,
        min_score=_num("min_score", float),
        max_score=_num("max_score", float),
        no_box=_flag(get("no_box")),
        review=get("review") or None,
        disagree=_flag(get("disagree")),
        sort=get("sort") or "score",
    )


def _flag(value: object) -> bool:
    return str(value or "").lower() in ("1", "true", "on", "yes")


def _disagrees_with_tags() -> Any:
    """Condition on ``images``: tagged, and a shown box of an untagged class or a tag with no shown box."""
    shown = (Box.image_id == Image.id, Box.source != BoxSource.ground_truth, Box.status != ReviewStatus.rejected)
    tags = select(ImageTag.category_id).where(ImageTag.image_id == Image.id).correlate(Image)
    untagged_box = exists().where(*shown, Box.category_id.not_in(tags)).correlate(Image)
    box_for_tag = exists().where(*shown, Box.category_id == ImageTag.category_id).correlate(Image, ImageTag)
    tag_without_box = exists().where(ImageTag.image_id == Image.id, ~box_for_tag).correlate(Image)
    return exists().where(ImageTag.image_id == Image.id).correlate(Image) & (untagged_box | tag_without_box)


def _base(f: ImageFilter, *columns: Any) -> Select[*tuple[Any, ...]]:
    """``SELECT columns FROM images`` restricted to the filter (no order, no limit)."""
    stmt = select(*columns).select_from(Image).where(Image.collection_id == f.collection_id, Image.status == ImageStatus.ok)
    box_conditions = []
    if f.category_id is not None:
        box_conditions.append(Box.category_id == f.category_id)
    if f.status is not None:
        box_conditions.append(Box.status == ReviewStatus(f.status))
    if box_conditions:
        stmt = stmt.where(exists().where(Box.image_id == Image.id, Box.source != BoxSource.ground_truth, *box_conditions))
    if f.min_score is not None:
        stmt = stmt.where(Image.min_score >= f.min_score)
    if f.max_score is not None:
        stmt = stmt.where(Image.min_score <= f.max_score)
    if f.no_box:
        stmt = stmt.where(Image.n_boxes == 0)
    if f.review is not None:
        stmt = stmt.where(Image.review_state == ImageReviewState(f.review))
    if f.disagree:
        stmt = stmt.where(_disagrees_with_tags())
    return stmt


def list_images(session: Session, f: ImageFilter, *, limit: int, after: Cursor | None = None) -> Page:
    """One page of images in the filter's order, starting after ``after``."""
    items = _scan(session, f, limit=limit + 1, cursor=after, forward=True)
    has_more = len(items) > limit
    items = items[:limit]
    return Page(items=items, next_cursor=Cursor.of(items[-1]).encode() if has_more and items else None)


def neighbour(session: Session, f: ImageFilter, image: Image, *, forward: bool) -> Image | None:
    """The image right after (``forward``) or before ``image`` in the filter's order."""
    found = _scan(session, f, limit=1, cursor=Cursor.of(image), forward=forward)
    return found[0] if found else None


@dataclass(frozen=True)
class _Part:
    """One index range scan of a page: its filtered statement (no order yet) and sort keys.

    ``keys``: ``images`` column names in scan order, descending when ``ascending`` is false."""

    stmt: Select[*tuple[Any, ...]]
    keys: tuple[str, ...]
    ascending: bool

    def ordered(self) -> list[Any]:
        """ORDER BY terms over ``images`` columns."""
        columns = [getattr(Image, key) for key in self.keys]
        return [c.asc() if self.ascending else c.desc() for c in columns]


def _parts(f: ImageFilter, columns: Sequence[Any], *, cursor: Cursor | None, forward: bool) -> list[_Part]:
    """The scans that make up a page in the filter's order, starting after (``forward``) or
    before ``cursor``; a caller runs them in turn until it has enough rows."""
    base = _base(f, *columns)
    if f.sort == "id":
        stmt = base
        if cursor is not None:
            stmt = stmt.where(Image.id > cursor.id if forward else Image.id < cursor.id)
        return [_Part(stmt, ("id",), forward)]

    scored = base.where(Image.min_score.is_not(None))
    unscored = base.where(Image.min_score.is_(None))
    key = tuple_(Image.min_score, Image.id)
    # Scored rows are scanned with ascending keys when the page goes forward in ascending
    # order or backward in descending order; unscored rows always come last, by id.
    scored_ascending = forward != (f.sort == "-score")

    def _beyond(c: Cursor) -> Any:
        return key > tuple_(c.score, c.id) if scored_ascending else key < tuple_(c.score, c.id)

    # (is_unscored, statement) in scan order. Forward: scored images, then unscored ones.
    parts: list[tuple[bool, Select[*tuple[Any, ...]]]]
    if forward:
        if cursor is None:
            parts = [(False, scored), (True, unscored)]
        elif cursor.score is not None:
            parts = [(False, scored.where(_beyond(cursor))), (True, unscored)]
        else:
            parts = [(True, unscored.where(Image.id > cursor.id))]
    else:
        if cursor is None:
            parts = [(True, unscored), (False, scored)]
        elif cursor.score is None:
            parts = [(True, unscored.where(Image.id < cursor.id)), (False, scored)]
        else:
            parts = [(False, scored.where(_beyond(cursor)))]
    # A filter can rule a part out: ``no_box`` images have no score, a score range excludes
    # unscored ones. Skipping that part saves a fruitless scan of the index.
    if f.no_box:
        parts = [p for p in parts if p[0]]
    if f.min_score is not None or f.max_score is not None:
        parts = [p for p in parts if not p[0]]
    return [_Part(stmt, ("id",), forward) if is_unscored else _Part(stmt, ("min_score", "id"), scored_ascending)
            for is_unscored, stmt in parts]


def _scan(session: Session, f: ImageFilter, *, limit: int, cursor: Cursor | None, forward: bool) -> list[Image]:
    found: list[Image] = []
    for part in _parts(f, (Image,), cursor=cursor, forward=forward):
        if len(found) >= limit:
            break
        found.extend(session.scalars(part.stmt.order_by(*part.ordered()).limit(limit - len(found))))
    return found


# -- the review grid ---------------------------------------------------------------------------
@dataclass
class GridImage:
    """What one grid thumbnail shows. ``boxes``: ``(x1, y1, x2, y2, status)`` in image pixels
    (xyxy) of its CAM and human boxes (in no particular order); ``map_key``: the blob key of its newest
    concept map (the grid paints it as a heatmap, see ``web/static/js/heatmap.js``)."""

    id: int
    rel_path: str
    thumb_key: str | None
    storage_key: str | None
    width: int | None
    height: int | None
    min_score: float | None
    map_key: str | None
    boxes: list[tuple[float, float, float, float, ReviewStatus]] = field(default_factory=list)

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.min_score, self.id)


@dataclass
class GridPage:
    """A grid page in display order with the cursors of the pages around it (``None``: no such page).

    ``next_cursor`` goes in ``cursor=`` (the page after), ``prev_cursor`` in ``before=``;
    ``first``: this is the first page (a page past the end, reached by an old link, is not)."""

    items: list[GridImage]
    next_cursor: str | None
    prev_cursor: str | None
    first: bool


@functools.cache
def _grid_columns() -> tuple[Any, ...]:
    """Columns of a grid row: the image, its newest concept map's key and its boxes as one string.

    The boxes come as ``"x1,y1,x2,y2,status;..."`` (``aggregate_strings``: ``string_agg`` on
    PostgreSQL, ``group_concat`` on SQLite) so a page is one row per image and one round trip;
    both correlated subqueries run only for the rows the LIMIT keeps. Built once: the
    expressions are immutable and have no parameters."""
    concept_map = (select(ConceptMap.raw_key)
                   .where(ConceptMap.image_id == Image.id)
                   .order_by(ConceptMap.model_version_id.desc(), ConceptMap.category_id).limit(1)
                   .correlate(Image).scalar_subquery())
    as_text = [cast(c, String) for c in (Box.x1, Box.y1, Box.x2, Box.y2)]
    box_text = as_text[0] + "," + as_text[1] + "," + as_text[2] + "," + as_text[3] + "," + cast(Box.status, String)
    boxes = (select(func.aggregate_strings(box_text, ";"))
             .where(Box.image_id == Image.id, Box.source != BoxSource.ground_truth)
             .correlate(Image).scalar_subquery())
    return (Image.id, Image.rel_path, Image.thumb_key, Image.storage_key, Image.width, Image.height, Image.min_score, concept_map, boxes)


def _parse_boxes(text: str | None) -> list[tuple[float, float, float, float, ReviewStatus]]:
    """``"x1,y1,x2,y2,status;..."`` -> ``[(x1, y1, x2, y2, status)]`` (xyxy pixels)."""
    if not text:
        return []
    boxes = []
    for item in text.split(";"):
        x1, y1, x2, y2, status = item.split(",")
        boxes.append((float(x1), float(y1), float(x2), float(y2), _STATUS_BY_VALUE[status]))
    return boxes


def _grid_scan(session: Session, f: ImageFilter, *, limit: int, cursor: Cursor | None, forward: bool) -> list[GridImage]:
    """Up to ``limit`` grid images from ``cursor`` on, in scan order (reversed when not ``forward``)."""
    found: list[GridImage] = []
    for part in _parts(f, _grid_columns(), cursor=cursor, forward=forward):
        if len(found) >= limit:
            break
        rows = session.execute(part.stmt.order_by(*part.ordered()).limit(limit - len(found)))
        found.extend(_grid_image(row) for row in rows)
    return found


def _grid_image(row: Sequence[Any]) -> GridImage:
    """A grid row (the columns of :func:`_grid_columns`) as a :class:`GridImage`."""
    image_id, rel_path, thumb_key, storage_key, width, height, min_score, map_key, boxes = row
    return GridImage(image_id, rel_path, thumb_key, storage_key, width, height, min_score, map_key, _parse_boxes(boxes))


def grid_page(session: Session, f: ImageFilter, *, limit: int, after: Cursor | None = None, before: Cursor | None = None) -> GridPage:
    """The grid page after ``after`` (or the first page), or the page that ends right before ``before``.

    Keyset both ways: a ``before`` page scans the reversed order from ``before`` and flips the
    rows. When fewer than ``limit`` rows lie before it, the answer is the first page, so
    "previous" never shows a short page. A ``before`` page always has a next page (``before``'s
    row or its followers); ``prev_cursor`` is set whenever rows lie before the page's first row.
    """
    if after is not None and before is not None:
        raise QueryError("give either a cursor (next page) or before (previous page), not both")
    if before is not None:
        items = _grid_scan(session, f, limit=limit + 1, cursor=before, forward=False)
        if len(items) > limit:
            items = items[:limit][::-1]
            return GridPage(items, next_cursor=items[-1].cursor.encode(), prev_cursor=items[0].cursor.encode(), first=False)
        if len(items) == limit:
            return GridPage(items[::-1], next_cursor=items[0].cursor.encode(), prev_cursor=None, first=True)
        after = None  # fewer than a page before it: show the first page
    items = _grid_scan(session, f, limit=limit + 1, cursor=after, forward=True)
    more = len(items) > limit
    items = items[:limit]
    return GridPage(items, next_cursor=items[-1].cursor.encode() if more and items else None,
                    prev_cursor=items[0].cursor.encode() if after is not None and items else None, first=after is None)


def count_images(session: Session, f: ImageFilter, *, cap: int = COUNT_CAP) -> tuple[int, bool]:
    """``(n, exact)``: images matching the filter, counted up to ``cap`` (``exact`` is false
    when there are more). Unfiltered and "to review" counts read only the image index."""
    capped = _base(f, Image.id).limit(cap + 1).subquery()
    n = int(session.scalar(select(func.count()).select_from(capped)) or 0)
    return min(n, cap), n <= cap


def cursor_at(session: Session, f: ImageFilter, offset: int) -> Cursor | None:
    """The cursor of the row right before position ``offset`` (0-based) in the filter's order,
    so ``grid_page(after=...)`` starts at that row; ``None`` for offset 0 or past the end.
    Reads only index columns; used to jump to a page number."""
    if offset <= 0:
        return None
    remaining = offset - 1
    for part in _parts(f, (Image.min_score, Image.id), cursor=None, forward=True):
        row = session.execute(part.stmt.order_by(*part.ordered()).offset(remaining).limit(1)).first()
        if row is not None:
            return Cursor(row[0], row[1])
        remaining -= int(session.scalar(select(func.count()).select_from(part.stmt.subquery())) or 0)
        if remaining < 0:
            return None
    return None


@dataclass(frozen=True)
class ReviewProgress:
    """Images of a collection by review state (``images.review_state``): ``to_review`` not
    reviewed yet, ``reviewed`` reviewed with boxes, ``no_objects`` reviewed negatives."""

    total: int
    to_review: int
    reviewed: int
    no_objects: int


def review_progress(session: Session, collection_id: int) -> ReviewProgress:
    """One count over the ``images (collection_id, status, review_state)`` index (no table reads);
    failed imports are left out."""
    counts: dict[str, int] = {}
    for status, state, n in session.execute(
            select(Image.status, Image.review_state, func.count()).where(Image.collection_id == collection_id)
            .group_by(Image.status, Image.review_state)).all():
        if ImageStatus(status) == ImageStatus.ok:
            counts[ImageReviewState(state).value] = int(n)
    return ReviewProgress(sum(counts.values()), counts.get("unreviewed", 0), counts.get("reviewed", 0), counts.get("no_objects", 0))


@dataclass(frozen=True)
class ClassCounts:
    """Box counts of one class: ``proposed`` (to review), ``accepted``, ``rejected``, ``edited``."""

    category_id: int
    name: str
    proposed: int = 0
    accepted: int = 0
    rejected: int = 0
    edited: int = 0

    @property
    def reviewed(self) -> int:
        return self.accepted + self.rejected + self.edited


def class_counts(session: Session, collection_id: int) -> list[ClassCounts]:
    """Boxes (not ground truth) per class and review status, by category id. Categories belong
    to one collection, so the count needs no join to ``images``. Shown on request (the grid's
    class table loads it after the page), not on every page."""
    categories = dict(session.execute(select(Category.id, Category.name).where(Category.collection_id == collection_id)).all())
    counts: dict[int, dict[str, int]] = {cid: {} for cid in categories}
    if categories:
        rows = session.execute(select(Box.category_id, Box.status, func.count())
                               .where(Box.category_id.in_(list(categories)), Box.source != BoxSource.ground_truth)
                               .group_by(Box.category_id, Box.status)).all()
        for cid, status, n in rows:
            counts[cid][ReviewStatus(status).value] = int(n)
    return [ClassCounts(cid, categories[cid], **counts[cid]) for cid in sorted(categories)]


@dataclass(frozen=True)
class CollectionHead:
    """A collection's id, name and categories (``{id: name}`` by id): the grid's header and filters."""

    id: int
    name: str
    categories: dict[int, str]


def collection_head(session: Session, collection_id: int) -> CollectionHead | None:
    """The collection and its categories in one query; ``None`` when there is no such collection."""
    rows = session.execute(select(Collection.name, Category.id, Category.name)
                           .outerjoin(Category, Category.collection_id == Collection.id)
                           .where(Collection.id == collection_id).order_by(Category.id)).all()
    if not rows:
        return None
    return CollectionHead(collection_id, rows[0][0], {cid: name for _n, cid, name in rows if cid is not None})


def boxes_for_images(session: Session, image_ids: Sequence[int], *, include_ground_truth: bool = False) -> dict[int, list[Box]]:
    """Boxes of each image (CAM and human; ground truth only when asked), ordered by id."""
    result: dict[int, list[Box]] = {i: [] for i in image_ids}
    if not image_ids:
        return result
    stmt = select(Box).where(Box.image_id.in_(list(image_ids)))
    if not include_ground_truth:
        stmt = stmt.where(Box.source != BoxSource.ground_truth)
    for box in session.scalars(stmt.order_by(Box.image_id, Box.id)):
        result[box.image_id].append(box)
    return result


def concept_maps_for_images(session: Session, image_ids: Sequence[int]) -> dict[int, list[ConceptMap]]:
    """Concept maps per image, newest model version first."""
    result: dict[int, list[ConceptMap]] = {i: [] for i in image_ids}
    if not image_ids:
        return result
    stmt = (
        select(ConceptMap)
        .where(ConceptMap.image_id.in_(list(image_ids)))
        .order_by(ConceptMap.image_id, ConceptMap.model_version_id.desc(), ConceptMap.category_id)
    )
    for cmap in session.scalars(stmt):
        result[cmap.image_id].append(cmap)
    return result


def list_boxes(
    session: Session,
    collection_id: int,
    *,
    limit: int,
    after_id: int | None = None,
    category_id: int | None = None,
    status: str | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
    source: str | None = None,
) -> tuple[list[Box], int | None]:
    """Boxes of a collection by ascending id (keyset on ``boxes.id``); returns (boxes, next after_id)."""
    stmt = select(Box).join(Image, Image.id == Box.image_id).where(Image.collection_id == collection_id)
    if after_id is not None:
        stmt = stmt.where(Box.id > after_id)
    if category_id is not None:
        stmt = stmt.where(Box.category_id == category_id)
    if status is not None:
        if status not in REVIEW_STATUSES:
            raise QueryError(f"status must be one of {REVIEW_STATUSES}, not {status!r}")
        stmt = stmt.where(Box.status == ReviewStatus(status))
    if source is not None:
        try:
            stmt = stmt.where(Box.source == BoxSource(source))
        except ValueError as exc:
            raise QueryError(f"source must be one of {[s.value for s in BoxSource]}, not {source!r}") from exc
    if min_score is not None:
        stmt = stmt.where(Box.score >= min_score)
    if max_score is not None:
        stmt = stmt.where(Box.score <= max_score)
    rows = list(session.scalars(stmt.order_by(Box.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)
