"""Collections: create (one name rule for the web and the CLI), find, list with counts, delete,
and the figures a collection page shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from web.services.errors import Conflict, NotFound
from web.validation import check_name
from worker.store.blobs import LocalBlobStore
from worker.store.collections_repo import delete_collection as delete_collection_rows
from worker.store.models import Collection, Evaluation, Image, ImageStatus, Job, ModelVersion

RECENT_JOBS = 30
LISTED_FAILED_IMAGES = 100
RECENT_EVALUATIONS = 20
LISTED_MODELS = 50


def create_collection(session: Session, name: Any) -> Collection:
    """Create a collection (commits). Names follow :func:`web.validation.check_name`
    (``Invalid``); a name in use is a ``Conflict``."""
    name = check_name(name)
    taken = Conflict("exists", f"a collection named {name!r} already exists")
    if session.scalar(select(Collection.id).where(Collection.name == name)) is not None:
        raise taken
    collection = Collection(name=name)
    session.add(collection)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise taken from exc
    return collection


def get_collection(session: Session, collection_id: int) -> Collection:
    """Collection ``collection_id`` (``NotFound`` when there is none)."""
    collection = session.get(Collection, collection_id)
    if collection is None:
        raise NotFound("not_found", f"no collection {collection_id}")
    return collection


def collection_by_name(session: Session, name: str) -> Collection:
    """The collection called ``name`` (``NotFound`` when there is none)."""
    collection = session.scalars(select(Collection).where(Collection.name == name)).first()
    if collection is None:
        raise NotFound("not_found", f"no collection named {name!r}")
    return collection


def delete_collection(session: Session, blobs: LocalBlobStore, collection_id: int) -> None:
    """Delete a collection, its rows and the blobs only it used (commits)."""
    get_collection(session, collection_id)
    delete_collection_rows(session, blobs, collection_id)
    session.commit()


def newest_collections(session: Session, limit: int) -> list[Collection]:
    """The ``limit`` newest collections, newest first."""
    return list(session.scalars(select(Collection).order_by(Collection.id.desc()).limit(limit)))


def image_counts(session: Session, collection_ids: list[int] | None = None) -> dict[int, int]:
    """``{collection id: number of images}`` for ``collection_ids`` (every collection when ``None``;
    collections without images are absent)."""
    stmt = select(Image.collection_id, func.count()).group_by(Image.collection_id)
    if collection_ids is not None:
        if not collection_ids:
            return {}
        stmt = stmt.where(Image.collection_id.in_(collection_ids))
    return {collection_id: int(count) for collection_id, count in session.execute(stmt).all()}


def image_status_counts(session: Session, collection_id: int) -> dict[str, int]:
    """``{"ok": n, "failed": n, ...}``: the collection's images by import status (absent: none)."""
    rows = session.execute(select(Image.status, func.count()).where(Image.collection_id == collection_id).group_by(Image.status)).all()
    return {ImageStatus(status).value: int(count) for status, count in rows}


@dataclass
class CollectionOverview:
    """What a collection's page lists besides the collection itself."""

    image_counts: dict[str, int]  # images by import status (:func:`image_status_counts`)
    jobs: list[Job]  # the newest RECENT_JOBS jobs, newest first
    failed_images: list[Image]  # the first LISTED_FAILED_IMAGES images an import could not read
    evaluations: list[Evaluation]  # the newest RECENT_EVALUATIONS evaluations
    models: list[ModelVersion]  # the newest LISTED_MODELS model versions (of any collection)


def collection_overview(session: Session, collection_id: int) -> CollectionOverview:
    """The figures and recent rows of a collection's page (read-only)."""
    return CollectionOverview(
        image_counts=image_status_counts(session, collection_id),
        jobs=list(session.scalars(select(Job).where(Job.collection_id == collection_id).order_by(Job.id.desc()).limit(RECENT_JOBS))),
        failed_images=list(session.scalars(select(Image).where(Image.collection_id == collection_id, Image.status == ImageStatus.failed)
                                           .order_by(Image.id).limit(LISTED_FAILED_IMAGES))),
        evaluations=list(session.scalars(select(Evaluation).where(Evaluation.collection_id == collection_id)
                                         .order_by(Evaluation.id.desc()).limit(RECENT_EVALUATIONS))),
        models=list(session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc()).limit(LISTED_MODELS))),
    )
