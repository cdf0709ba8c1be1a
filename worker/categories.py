"""Categories of a collection by name, created on demand (race-safe: insert-or-ignore, then read)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.store.dialect import upsert_insert
from worker.store.models import Category
from worker.store.models.base import utcnow

MAX_NAME = 200


def clean_name(name: str) -> str:
    """A category name stripped of surrounding space; ``ValueError`` when empty or too long."""
    cleaned = str(name).strip()
    if not cleaned:
        raise ValueError("a category name must not be empty")
    if len(cleaned) > MAX_NAME:
        raise ValueError(f"category name longer than {MAX_NAME} characters: {cleaned[:40]!r}...")
    return cleaned


def ensure_categories(session: Session, collection_id: int, names: Iterable[str]) -> dict[str, int]:
    """``{name: category id}`` for every name, creating missing categories of ``collection_id``."""
    wanted = sorted({clean_name(name) for name in names})
    if not wanted:
        return {}
    table = Category.__table__
    now = utcnow()
    stmt = upsert_insert(session, table).on_conflict_do_nothing(index_elements=["collection_id", "name"])
    session.execute(stmt, [{"collection_id": collection_id, "name": name, "created_at": now} for name in wanted])
    rows = session.execute(select(Category.name, Category.id).where(Category.collection_id == collection_id, Category.name.in_(wanted)))
    return {name: category_id for name, category_id in rows}
