"""Collection-level operations: categories with stable ids, and deleting a collection with its blobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from worker.store.blob_refs import keys_in_json, unreferenced_keys
from worker.store.blobs import LocalBlobStore, is_blob_key
from worker.store.dialect import chunked, rows_of, upsert_insert
from worker.store.models import Box, Category, Collection, ConceptMap, Evaluation, Image, Job, ModelVersion, table_of

_MAX_NAME = 200


class CollectionNotFoundError(LookupError):
    """No collection has this id."""


# -- categories ------------------------------------------------------------------------------
def clean_category_name(name: object) -> str:
    """A category name stripped of surrounding whitespace; empty, non-text or >200 chars is refused."""
    if not isinstance(name, str):
        raise ValueError(f"category name must be text, got {type(name).__name__}: {name!r}")
    cleaned = name.strip()
    if not cleaned:
        raise ValueError("category name must not be empty")
    if len(cleaned) > _MAX_NAME:
        raise ValueError(f"category name longer than {_MAX_NAME} characters: {cleaned[:40]!r}...")
    return cleaned


def get_or_create_categories(session: Session, collection_id: int, names: Sequence[str]) -> dict[str, int]:
    """Ids of the categories ``names`` of a collection, creating the missing ones.

    Ids are stable: an existing category keeps its id forever; new ones get increasing ids
    in the order given. Safe under concurrency (``INSERT .. ON CONFLICT DO NOTHING`` on the
    unique ``(collection_id, name)``). Returns ``{name: id}`` for the cleaned names.
    """
    cleaned = list(dict.fromkeys(clean_category_name(name) for name in names))
    if not cleaned:
        return {}
    _require_collection(session, collection_id)
    table = table_of(Category)
    stmt = upsert_insert(session, table).on_conflict_do_nothing(index_elements=["collection_id", "name"])
    ids: dict[str, int] = {}
    for chunk in chunked(cleaned):
        existing = _ids_by_name(session, collection_id, chunk)
        missing = [name for name in chunk if name not in existing]
        if missing:
            session.execute(stmt, [{"collection_id": collection_id, "name": name} for name in missing])
            existing.update(_ids_by_name(session, collection_id, missing))
        ids.update(existing)
    return {name: ids[name] for name in cleaned}


def _ids_by_name(session: Session, collection_id: int, names: Sequence[str]) -> dict[str, int]:
    table = table_of(Category)
    query = select(table.c.name, table.c.id).where(table.c.collection_id == collection_id, table.c.name.in_(names))
    return {name: category_id for name, category_id in rows_of(session.execute(query))}


def get_or_create_category(session: Session, collection_id: int, name: str) -> Category:
    """The category ``name`` of a collection (created when missing), as an ORM object."""
    category_id = get_or_create_categories(session, collection_id, [name])[clean_category_name(name)]
    category = session.get(Category, category_id)
    assert category is not None  # just selected or inserted in this transaction
    return category


# -- deleting --------------------------------------------------------------------------------
@dataclass
class CollectionDeleteReport:
    """What :func:`delete_collection` removed. Counts are rows; ``blobs_*`` are files."""

    collection_id: int
    images: int = 0
    boxes: int = 0
    concept_maps: int = 0
    jobs: int = 0
    model_versions_deleted: int = 0
    model_versions_kept: list[int] = field(default_factory=list)
    blobs_removed: int = 0
    blobs_kept: int = 0


def delete_collection(session: Session, blobs: LocalBlobStore, collection_id: int) -> CollectionDeleteReport:
    """Delete a collection, every row that belongs to it, and the blobs nothing else uses.

    Rows go by the foreign keys' ``ON DELETE CASCADE`` (images, tags, boxes, concept maps,
    categories, jobs, evaluations). Model versions trained on the collection are deleted
    with their checkpoints unless another collection's boxes or concept maps come from
    them; those are kept (their ``collection_id`` becomes NULL). Blob files (images,
    thumbnails, maps, overlays, descriptor codes, checkpoints, keys in job results) are content
    addressed and may be shared with other collections, so a file is removed only when no
    remaining row references it.

    The session is committed here (the rows must be gone before their files are), then the
    files are removed: a crash in between leaves unreferenced files, never rows that point
    at missing files.
    """
    _require_collection(session, collection_id)
    report = CollectionDeleteReport(collection_id=collection_id)
    images_t, boxes_t, maps_t = table_of(Image), table_of(Box), table_of(ConceptMap)
    in_collection = select(images_t.c.id).where(images_t.c.collection_id == collection_id)

    candidates: set[str] = set()
    image_keys = select(images_t.c.storage_key, images_t.c.thumb_key).where(images_t.c.collection_id == collection_id)
    for storage_key, thumb_key in rows_of(session.execute(image_keys)):
        candidates.update(key for key in (storage_key, thumb_key) if key)
    map_keys = select(maps_t.c.raw_key, maps_t.c.overlay_key, maps_t.c.codes_key).where(maps_t.c.image_id.in_(in_collection))
    for raw_key, overlay_key, codes_key in rows_of(session.execute(map_keys)):
        candidates.update(key for key in (raw_key, overlay_key, codes_key) if key)
    for params, result in session.execute(select(Job.params, Job.result).where(Job.collection_id == collection_id)):
        candidates.update(keys_in_json(params))
        candidates.update(keys_in_json(result))
    for (metrics,) in session.execute(select(Evaluation.metrics).where(Evaluation.collection_id == collection_id)):
        candidates.update(keys_in_json(metrics))

    to_delete: list[int] = []
    for mv_id, checkpoint_key, spec, metrics in rows_of(session.execute(
        select(ModelVersion.id, ModelVersion.checkpoint_key, ModelVersion.spec, ModelVersion.metrics).where(ModelVersion.collection_id == collection_id)
    )):
        if _used_elsewhere(session, mv_id, collection_id):
            report.model_versions_kept.append(mv_id)
            continue
        to_delete.append(mv_id)
        if checkpoint_key:
            candidates.add(checkpoint_key)
        candidates.update(keys_in_json(spec))
        candidates.update(keys_in_json(metrics))

    report.images = session.execute(select(func.count()).select_from(images_t).where(images_t.c.collection_id == collection_id)).scalar_one()
    report.boxes = session.execute(select(func.count()).select_from(boxes_t).where(boxes_t.c.image_id.in_(in_collection))).scalar_one()
    report.concept_maps = session.execute(select(func.count()).select_from(maps_t).where(maps_t.c.image_id.in_(in_collection))).scalar_one()
    report.jobs = session.execute(select(func.count()).select_from(Job).where(Job.collection_id == collection_id)).scalar_one()

    for chunk in chunked(to_delete):
        session.execute(delete(table_of(ModelVersion)).where(table_of(ModelVersion).c.id.in_(chunk)))
    session.execute(delete(table_of(Collection)).where(table_of(Collection).c.id == collection_id))
    report.model_versions_deleted = len(to_delete)
    session.commit()
    session.expire_all()

    candidates = {key for key in candidates if is_blob_key(key)}  # a malformed stored value is never a path
    removable = unreferenced_keys(session, candidates)
    session.commit()  # end the read transaction before touching files
    report.blobs_removed = blobs.delete_many(sorted(removable))
    report.blobs_kept = len(candidates) - len(removable)
    return report


def _used_elsewhere(session: Session, model_version_id: int, collection_id: int) -> bool:
    """True when boxes or concept maps of another collection's images come from this model version."""
    images_t = table_of(Image)
    other_images = select(images_t.c.id).where(images_t.c.collection_id != collection_id)
    box_use = exists().where(table_of(Box).c.model_version_id == model_version_id, table_of(Box).c.image_id.in_(other_images))
    map_use = exists().where(table_of(ConceptMap).c.model_version_id == model_version_id, table_of(ConceptMap).c.image_id.in_(other_images))
    return bool(session.execute(select(box_use | map_use)).scalar())


def _require_collection(session: Session, collection_id: int) -> None:
    found = session.execute(select(table_of(Collection).c.id).where(table_of(Collection).c.id == collection_id)).first()
    if found is None:
        raise CollectionNotFoundError(f"collection {collection_id} does not exist")


def collection_blob_keys(session: Session, collection_id: int) -> set[str]:
    """Keys of the image, thumbnail, map, overlay and descriptor-codes blobs of a collection (for checks and exports)."""
    images_t, maps_t = table_of(Image), table_of(ConceptMap)
    keys: set[str] = set()
    for row in session.execute(select(images_t.c.storage_key, images_t.c.thumb_key).where(images_t.c.collection_id == collection_id)):
        keys.update(key for key in row if key)
    in_collection = select(images_t.c.id).where(images_t.c.collection_id == collection_id)
    for row in session.execute(select(maps_t.c.raw_key, maps_t.c.overlay_key, maps_t.c.codes_key).where(maps_t.c.image_id.in_(in_collection))):
        keys.update(key for key in row if key)
    return keys


__all__: Sequence[str] = (
    "CollectionDeleteReport", "CollectionNotFoundError", "clean_category_name", "collection_blob_keys",
    "delete_collection", "get_or_create_categories", "get_or_create_category",
)
