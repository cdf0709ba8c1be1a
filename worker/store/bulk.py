"""Bulk writes of images, tags, boxes and concept maps: Core statements over lists of dicts.

Nothing here adds ORM objects one at a time; each function issues a few statements per
:data:`~worker.store.dialect.CHUNK` rows and leaves the transaction to the caller (commit
per chunk in jobs). Works on SQLite and PostgreSQL.

Row dictionaries (all coordinates are pixels of the displayed image, xyxy):

- image row: ``collection_id, sha256, rel_path`` required; ``storage_key, thumb_key, width,
  height, status ("ok"|"failed"), failure_reason`` optional (a failed image needs a reason).
- box row: ``image_id, category_id, x1, y1, x2, y2`` required; ``score, source, status,
  model_version_id, reviewer_id`` optional (defaults: source ``cam``, status ``proposed``).
- concept map row: ``image_id, category_id, model_version_id, raw_key`` required,
  ``overlay_key``, ``codes_key`` optional.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.orm import Session

from worker.store.blobs import validate_key
from worker.store.dialect import chunked, copy_rows, in_values, insert_rows, rows_of
from worker.store.models import (
    Box,
    BoxSource,
    Category,
    ConceptMap,
    Image,
    ImageStatus,
    ImageTag,
    ReviewStatus,
    table_of,
)
from worker.store.models.base import utcnow

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_IMAGE_FIELDS = ("collection_id", "sha256", "rel_path", "storage_key", "thumb_key", "width", "height", "status", "failure_reason")
_BOX_FIELDS = ("image_id", "category_id", "x1", "y1", "x2", "y2", "score", "source", "status", "model_version_id", "reviewer_id")
_EDITABLE_BOX_FIELDS = frozenset({"x1", "y1", "x2", "y2", "category_id", "status", "score", "reviewer_id"})
_GEOMETRY = ("x1", "y1", "x2", "y2")
#: A new proposal overlapping a reviewed box of the same image and category at least this much
#: (IoU) is not written: re-running inference never proposes a box a reviewer already decided.
REVIEWED_IOU = 0.5

images_t = table_of(Image)
boxes_t = table_of(Box)
tags_t = table_of(ImageTag)
maps_t = table_of(ConceptMap)


class StaleEditError(Exception):
    """A review edit named a row version that is no longer current (HTTP 409 Conflict).

    Attributes:
        box_id: the box edited.
        expected_version: the version the editor read.
        current_version: the version now stored.
    """

    def __init__(self, box_id: int, expected_version: int, current_version: int) -> None:
        super().__init__(
            f"box {box_id} was changed by someone else (you edited version {expected_version}, "
            f"it is now at version {current_version}); reload it and edit again"
        )
        self.box_id = box_id
        self.expected_version = expected_version
        self.current_version = current_version


class BoxNotFoundError(LookupError):
    """The box to edit does not exist (deleted, or never existed)."""


class WrongCategoryError(ValueError):
    """A box was given a category of another collection (or one that does not exist)."""

    def __init__(self, category_id: object, collection_id: int) -> None:
        super().__init__(f"category {category_id!r} is not a category of collection {collection_id}")
        self.category_id = category_id
        self.collection_id = collection_id


def check_category(session: Session, category_id: int, collection_id: int) -> None:
    """Raise :class:`WrongCategoryError` unless ``category_id`` is a category of ``collection_id``:
    the rule for every box a person edits or draws."""
    if session.execute(select(Category.collection_id).where(Category.id == category_id)).scalar() != collection_id:
        raise WrongCategoryError(category_id, collection_id)


@dataclass(frozen=True)
class ImageInsertResult:
    """Outcome of :func:`insert_images_detailed`, aligned with the rows given.

    ``ids[i]`` is the id of row ``i`` (the existing image when it was a duplicate);
    ``created[i]`` is False when an image with the same ``(collection_id, sha256)`` already
    existed (or appeared earlier in the same call), so nothing was inserted for it.
    """

    ids: list[int]
    created: list[bool]

    @property
    def n_created(self) -> int:
        return sum(self.created)

    @property
    def n_duplicates(self) -> int:
        return len(self.created) - self.n_created


# -- images --------------------------------------------------------------------------------
def insert_images(session: Session, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert images, skipping ones whose content hash the collection already has.

    Returns the image id of every row, in order; a duplicate gets the id of the image
    already stored, so re-importing the same files never duplicates rows.
    """
    return insert_images_detailed(session, rows).ids


def insert_images_detailed(session: Session, rows: Sequence[Mapping[str, Any]]) -> ImageInsertResult:
    """Like :func:`insert_images`, also telling which rows were new (``INSERT .. ON CONFLICT DO NOTHING``)."""
    clean = [_image_row(row, index) for index, row in enumerate(rows)]
    if not clean:
        return ImageInsertResult(ids=[], created=[])
    now = utcnow()
    for row in clean:
        row["created_at"] = now
        row["n_boxes"] = 0
    returned = insert_rows(
        session, images_t, clean, (*_IMAGE_FIELDS, "n_boxes", "created_at"),
        on_conflict=lambda stmt: stmt.on_conflict_do_nothing(index_elements=["collection_id", "sha256"]),
        returning=(images_t.c.id, images_t.c.collection_id, images_t.c.sha256),
    )
    found: dict[tuple[int, str], int] = {}
    created_keys: set[tuple[int, str]] = set()
    for image_id, collection_id, sha in returned:
        found[(collection_id, sha)] = image_id
        created_keys.add((collection_id, sha))
    missing: dict[int, list[str]] = {}
    for row in clean:
        key = (row["collection_id"], row["sha256"])
        if key not in found:
            missing.setdefault(key[0], []).append(key[1])
    for collection_id, shas in missing.items():
        for chunk in chunked(sorted(set(shas))):
            query = select(images_t.c.id, images_t.c.sha256).where(
                images_t.c.collection_id == collection_id, in_values(session, images_t.c.sha256, chunk)
            )
            for image_id, sha in rows_of(session.execute(query)):
                found[(collection_id, sha)] = image_id
    ids: list[int] = []
    created: list[bool] = []
    for row in clean:
        key = (row["collection_id"], row["sha256"])
        ids.append(found[key])
        # Only the first row of a hash inserted in this call counts as created.
        created.append(key in created_keys)
        created_keys.discard(key)
    return ImageInsertResult(ids=ids, created=created)


def insert_image_tags(session: Session, pairs: Iterable[tuple[int, int]]) -> int:
    """Tag images: ``(image_id, category_id)`` pairs; pairs already stored are skipped.

    Returns the number of pairs given (after removing repeats), not the number new.
    """
    unique = sorted({(int(image_id), int(category_id)) for image_id, category_id in pairs})
    if not unique:
        return 0
    insert_rows(
        session, tags_t, [{"image_id": i, "category_id": c} for i, c in unique], ("image_id", "category_id"),
        on_conflict=lambda stmt: stmt.on_conflict_do_nothing(index_elements=["image_id", "category_id"]),
    )
    return len(unique)


def _image_row(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    unknown = set(row) - set(_IMAGE_FIELDS)
    if unknown:
        raise ValueError(f"image row {index}: unknown fields {sorted(unknown)}")
    for name in ("collection_id", "sha256", "rel_path"):
        if row.get(name) in (None, ""):
            raise ValueError(f"image row {index}: {name} is required")
    sha = row["sha256"]
    if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha):
        raise ValueError(f"image row {index}: sha256 must be 64 lowercase hex characters, got {sha!r}")
    rel_path = str(row["rel_path"])
    if len(rel_path) > 1024:
        raise ValueError(f"image row {index}: rel_path longer than 1024 characters")
    status = ImageStatus(row.get("status") or ImageStatus.ok)
    reason = row.get("failure_reason")
    if status is ImageStatus.failed and not reason:
        raise ValueError(f"image row {index}: a failed image needs a failure_reason")
    for name in ("width", "height"):
        value = row.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"image row {index}: {name} must be a positive int, got {value!r}")
    for name in ("storage_key", "thumb_key"):
        if row.get(name) is not None:
            validate_key(row[name])
    return {
        "collection_id": int(row["collection_id"]),
        "sha256": sha,
        "rel_path": rel_path,
        "storage_key": row.get("storage_key"),
        "thumb_key": row.get("thumb_key"),
        "width": row.get("width"),
        "height": row.get("height"),
        "status": status.value,
        "failure_reason": reason,
    }


# -- boxes ---------------------------------------------------------------------------------
def insert_boxes(session: Session, rows: Sequence[Mapping[str, Any]], *, refresh_stats: bool = True) -> int:
    """Insert boxes (any source): ``COPY`` on PostgreSQL, ``executemany`` on SQLite; returns how many.

    With ``refresh_stats`` the touched images' ``n_boxes/min_score/max_score`` are updated.
    """
    clean = [_box_row(row, index) for index, row in enumerate(rows)]
    _write_boxes(session, clean)
    if refresh_stats and clean:
        refresh_image_box_stats(session, {row["image_id"] for row in clean})
    return len(clean)


def _write_boxes(session: Session, clean: list[dict[str, Any]]) -> None:
    """Append validated box rows (from :func:`_box_row`)."""
    if not clean:
        return
    now = utcnow()
    for row in clean:
        row["created_at"] = now
        row["updated_at"] = now
        row["version"] = 1
    copy_rows(session, boxes_t, clean, (*_BOX_FIELDS, "version", "created_at", "updated_at"))


def replace_boxes(
    session: Session, image_ids: Iterable[int], model_version_id: int | None, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Replace the CAM proposals of ``image_ids`` made by ``model_version_id`` with ``rows``.

    Idempotent: running the same inference twice leaves one set of proposals. Only boxes
    with source ``cam``, status ``proposed`` and this model version are deleted; human,
    ground-truth and reviewed (accepted/rejected/edited) boxes are never touched. The image
    rows are locked first (``SELECT .. FOR UPDATE`` on PostgreSQL, the write lock on SQLite)
    so two jobs replacing the same images cannot interleave into duplicates.

    ``rows`` are box rows whose ``image_id`` is in ``image_ids``; ``source``/``status``/
    ``model_version_id`` are set here (and refused if given otherwise). All rows are checked
    before anything is deleted, so a bad row loses no proposals. A row overlapping a reviewed
    box (accepted, edited or rejected, a reviewer's own boxes included, any model version) of
    its image and category with IoU >= :data:`REVIEWED_IOU` is left out: the reviewer's
    decision stands and is never proposed again. Returns rows inserted.
    """
    targets = sorted({int(i) for i in image_ids})
    target_set = set(targets)
    prepared: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        if row.get("source", BoxSource.cam) not in (BoxSource.cam, BoxSource.cam.value):
            raise ValueError(f"box row {index}: replace_boxes writes CAM proposals only, got source {row['source']!r}")
        if row.get("status", ReviewStatus.proposed) not in (ReviewStatus.proposed, ReviewStatus.proposed.value):
            raise ValueError(f"box row {index}: proposals have status 'proposed', got {row['status']!r}")
        if row.get("model_version_id", model_version_id) != model_version_id:
            raise ValueError(f"box row {index}: model_version_id {row['model_version_id']} != {model_version_id}")
        if row.get("image_id") not in target_set:
            raise ValueError(f"box row {index}: image_id {row.get('image_id')!r} is not among the images replaced")
        prepared.append(_box_row({**row, "source": BoxSource.cam, "status": ReviewStatus.proposed, "model_version_id": model_version_id}, index))
    mv_clause = boxes_t.c.model_version_id.is_(None) if model_version_id is None else boxes_t.c.model_version_id == model_version_id
    for chunk in chunked(targets):
        session.execute(select(images_t.c.id).where(_ids_in(session, images_t.c.id, chunk)).order_by(images_t.c.id).with_for_update())
        session.execute(
            delete(boxes_t).where(
                _ids_in(session, boxes_t.c.image_id, chunk),
                mv_clause,
                boxes_t.c.source == BoxSource.cam.value,
                boxes_t.c.status == ReviewStatus.proposed.value,
            )
        )
    prepared = _without_reviewed_duplicates(session, targets, prepared)
    # Every row was validated above, before anything was deleted.
    _write_boxes(session, prepared)
    refresh_image_box_stats(session, targets)
    return len(prepared)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` pixel boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _without_reviewed_duplicates(session: Session, image_ids: list[int], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` less those overlapping a reviewed box (see :func:`replace_boxes`)."""
    if not rows:
        return rows
    reviewed: dict[tuple[int, int], list[tuple[float, float, float, float]]] = {}
    for chunk in chunked(image_ids):
        for image_id, category_id, x1, y1, x2, y2 in rows_of(session.execute(
            select(boxes_t.c.image_id, boxes_t.c.category_id, boxes_t.c.x1, boxes_t.c.y1, boxes_t.c.x2, boxes_t.c.y2).where(
                _ids_in(session, boxes_t.c.image_id, chunk),
                boxes_t.c.source != BoxSource.ground_truth.value,
                boxes_t.c.status != ReviewStatus.proposed.value,
            )
        )):
            reviewed.setdefault((image_id, category_id), []).append((x1, y1, x2, y2))
    if not reviewed:
        return rows
    return [row for row in rows
            if not any(_iou(tuple(row[k] for k in _GEOMETRY), box) >= REVIEWED_IOU
                       for box in reviewed.get((row["image_id"], row["category_id"]), ()))]


def refresh_image_box_stats(session: Session, image_ids: Iterable[int]) -> None:
    """Recompute ``images.n_boxes/min_score/max_score`` from their boxes.

    Counted: boxes that are not ground truth and not rejected (what a reviewer still sees).
    ``min_score``/``max_score`` are ``NULL`` when no counted box has a score. Correlated
    subqueries, so each image is a few probes of ``ix_boxes_image_source`` whatever the
    planner's statistics say (a join + aggregate was planned as a scan of all boxes per
    chunk while a job was still filling the table).
    """
    targets = sorted({int(i) for i in image_ids})
    counted = and_(
        boxes_t.c.image_id == images_t.c.id,
        boxes_t.c.source != BoxSource.ground_truth.value,
        boxes_t.c.status != ReviewStatus.rejected.value,
    )
    stmt = update(images_t).values(
        n_boxes=select(func.count()).select_from(boxes_t).where(counted).scalar_subquery(),
        min_score=select(func.min(boxes_t.c.score)).where(counted).scalar_subquery(),
        max_score=select(func.max(boxes_t.c.score)).where(counted).scalar_subquery(),
    )
    for chunk in chunked(targets):
        session.execute(stmt.where(_ids_in(session, images_t.c.id, chunk)))
    _expire_loaded(session, Image, set(targets), ("n_boxes", "min_score", "max_score"))


def _ids_in(session: Session, column: Any, sorted_ids: Sequence[int]) -> Any:
    """``column IN (ids)`` plus the range they span, so the planner sees a narrow index range."""
    return and_(column.between(sorted_ids[0], sorted_ids[-1]), in_values(session, column, sorted_ids))


def update_box(session: Session, box_id: int, expected_version: int, **changes: Any) -> Box:
    """Apply a review edit to one box if nobody changed it since ``expected_version``.

    ``changes`` may hold ``x1, y1, x2, y2`` (all four together), ``category_id`` (of the
    same collection), ``status``, ``score``, ``reviewer_id``. Changing the geometry or the
    category without naming a status marks the box ``edited``. The write is one
    ``UPDATE boxes SET .., version = version + 1 WHERE id = :id AND version = :v``, so it is
    atomic across processes: when no row matched, :class:`StaleEditError` (or
    :class:`BoxNotFoundError`) is raised and nothing is written. Returns the updated
    :class:`Box` (freshly loaded; ``box.version`` is the new version). Not committed.
    """
    unknown = set(changes) - _EDITABLE_BOX_FIELDS
    if unknown:
        raise ValueError(f"cannot edit box fields {sorted(unknown)}; editable: {sorted(_EDITABLE_BOX_FIELDS)}")
    if not changes:
        raise ValueError("update_box needs at least one change")
    values: dict[str, Any] = {}
    if any(name in changes for name in _GEOMETRY):
        if not all(name in changes for name in _GEOMETRY):
            raise ValueError("give all of x1, y1, x2, y2 when changing a box's geometry")
        values.update(_check_geometry({name: changes[name] for name in _GEOMETRY}, "edit"))
    if "status" in changes:
        values["status"] = ReviewStatus(changes["status"]).value
    elif any(name in changes for name in (*_GEOMETRY, "category_id")):
        values["status"] = ReviewStatus.edited.value
    if "score" in changes:
        values["score"] = _check_score(changes["score"], "edit")
    if "reviewer_id" in changes:
        values["reviewer_id"] = changes["reviewer_id"]

    # Lock order image -> box, as in replace_boxes, so the two never deadlock.
    located = session.execute(
        select(boxes_t.c.image_id, images_t.c.collection_id).join(images_t, images_t.c.id == boxes_t.c.image_id).where(boxes_t.c.id == box_id)
    ).first()
    if located is None:
        raise BoxNotFoundError(f"box {box_id} does not exist")
    image_id: int = located[0]
    collection_id: int = located[1]
    if "category_id" in changes:
        check_category(session, changes["category_id"], collection_id)
        values["category_id"] = changes["category_id"]
    session.execute(select(images_t.c.id).where(images_t.c.id == image_id).with_for_update())
    new_version = session.execute(
        update(boxes_t)
        .where(boxes_t.c.id == box_id, boxes_t.c.version == expected_version)
        .values(**values, version=boxes_t.c.version + 1, updated_at=utcnow())
        .returning(boxes_t.c.version)
    ).scalar()
    if new_version is None:
        current = session.execute(select(boxes_t.c.version).where(boxes_t.c.id == box_id)).scalar()
        if current is None:
            raise BoxNotFoundError(f"box {box_id} does not exist")
        raise StaleEditError(box_id, expected_version, current)
    refresh_image_box_stats(session, [image_id])
    box = session.get(Box, box_id, populate_existing=True)
    assert box is not None and box.version == new_version  # the row is locked by the UPDATE above
    return box


_BOX_FIELD_SET = frozenset(_BOX_FIELDS)
# Accept both the stored value ("cam") and the enum member (BoxSource.cam).
_SOURCE_VALUES: dict[Any, str] = {**{m.value: m.value for m in BoxSource}, **{m: m.value for m in BoxSource}}
_STATUS_VALUES: dict[Any, str] = {**{m.value: m.value for m in ReviewStatus}, **{m: m.value for m in ReviewStatus}}


def _box_row(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    """A validated box row in database form (floats, enum values as strings). Hot path: no
    per-row string formatting unless the row is bad."""
    if not _BOX_FIELD_SET.issuperset(row):
        raise ValueError(f"box row {index}: unknown fields {sorted(set(row) - _BOX_FIELD_SET)}")
    image_id, category_id = row.get("image_id"), row.get("category_id")
    if image_id is None or category_id is None:
        raise ValueError(f"box row {index}: image_id and category_id are required")
    source = _SOURCE_VALUES.get(row.get("source") or "cam")
    status = _STATUS_VALUES.get(row.get("status") or "proposed")
    if source is None or status is None:
        raise ValueError(f"box row {index}: bad source {row.get('source')!r} or status {row.get('status')!r}")
    out: dict[str, Any] = _check_geometry(row, index)
    score = row.get("score")
    if score is not None:
        score = _check_score(score, f"box row {index}")
    out["image_id"] = int(image_id)
    out["category_id"] = int(category_id)
    out["score"] = score
    out["source"] = source
    out["status"] = status
    out["model_version_id"] = row.get("model_version_id")
    out["reviewer_id"] = row.get("reviewer_id")
    return out


def _check_geometry(row: Mapping[str, Any], where: str | int) -> dict[str, float]:
    """xyxy floats, finite, ``x1 <= x2`` and ``y1 <= y2``; ``where`` names the row in errors."""
    label = f"box row {where}" if isinstance(where, int) else where
    try:
        x1, y1, x2, y2 = float(row["x1"]), float(row["y1"]), float(row["x2"]), float(row["y2"])
    except KeyError as exc:
        raise ValueError(f"{label}: {exc.args[0]} is required") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{label}: box coordinates must be numbers ({exc})") from None
    if not (math.isfinite(x1) and math.isfinite(y1) and math.isfinite(x2) and math.isfinite(y2)):
        raise ValueError(f"{label}: box coordinates must be finite, got {(x1, y1, x2, y2)}")
    if x1 > x2 or y1 > y2:
        raise ValueError(f"{label}: box must be xyxy with x1 <= x2 and y1 <= y2, got {(x1, y1, x2, y2)}")
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}


def _check_score(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: score must be a number, got {value!r}") from None
    if not math.isfinite(score):
        raise ValueError(f"{where}: score must be finite, got {value!r}")
    return score


# -- concept maps --------------------------------------------------------------------------
def upsert_concept_maps(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert or replace the concept maps of (image, category, model version) triples.

    A re-run of inference overwrites ``raw_key``/``overlay_key``/``codes_key`` instead of adding
    rows (an absent optional key writes ``None``); when the same triple appears twice in ``rows``
    the last one wins. Returns the rows written. Keys must be blob keys
    (:func:`worker.store.blobs.validate_key`).
    """
    latest: dict[tuple[int, int, int], dict[str, Any]] = {}
    for index, row in enumerate(rows):
        try:
            triple = (int(row["image_id"]), int(row["category_id"]), int(row["model_version_id"]))
            raw_key = validate_key(row["raw_key"])
        except KeyError as exc:
            raise ValueError(f"concept map row {index}: {exc.args[0]} is required") from None
        overlay, codes = row.get("overlay_key"), row.get("codes_key")
        for optional in (overlay, codes):
            if optional is not None:
                validate_key(optional)
        latest[triple] = {
            "image_id": triple[0], "category_id": triple[1], "model_version_id": triple[2],
            "raw_key": raw_key, "overlay_key": overlay, "codes_key": codes,
        }
    if not latest:
        return 0
    now = utcnow()
    clean = [{**row, "created_at": now} for row in latest.values()]
    insert_rows(
        session, maps_t, clean, ("image_id", "category_id", "model_version_id", "raw_key", "overlay_key", "codes_key", "created_at"),
        on_conflict=lambda stmt: stmt.on_conflict_do_update(
            index_elements=["image_id", "category_id", "model_version_id"],
            set_={"raw_key": stmt.excluded.raw_key, "overlay_key": stmt.excluded.overlay_key, "codes_key": stmt.excluded.codes_key,
                  "created_at": stmt.excluded.created_at},
        ),
    )
    return len(clean)


def _expire_loaded(session: Session, model: type, ids: set[int], attributes: Sequence[str] | None) -> None:
    """Expire ORM objects of ``model`` with these ids already in the session (Core wrote under them)."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, model) and getattr(obj, "id", None) in ids:
            session.expire(obj, attributes)
