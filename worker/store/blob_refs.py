"""Which blob keys rows still reference, so shared content-addressed files are never deleted early.

Convention (for every table, present and future): a column that holds a blob key is a string
column whose name ends in ``_key`` (``storage_key``, ``thumb_key``, ``raw_key``, ``codes_key``,
``overlay_key``, ``checkpoint_key``). JSON columns (job params/results, model specs,
metrics) are searched too: any string in them that is a well-formed blob key counts as a
reference. New columns following the convention are found without changing this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import JSON, Column, String, select
from sqlalchemy.orm import Session

from worker.store.blobs import is_blob_key
from worker.store.dialect import chunked, in_values
from worker.store.models import Base

#: Above this many candidate keys a column is scanned once instead of probed with ``IN``.
_SCAN_THRESHOLD = 5000


def key_columns() -> list[Column[Any]]:
    """Every ``*_key`` string column of the schema (tables in dependency order)."""
    return [
        column
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if column.name.endswith("_key") and isinstance(column.type, String)
    ]


def json_columns() -> list[Column[Any]]:
    """Every JSON column of the schema (searched for embedded keys)."""
    return [column for table in Base.metadata.sorted_tables for column in table.columns if isinstance(column.type, JSON)]


def keys_in_json(value: Any) -> Iterator[str]:
    """Blob keys anywhere inside a decoded JSON value (dict values, list items, strings)."""
    if isinstance(value, str):
        if is_blob_key(value):
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from keys_in_json(item)
    elif isinstance(value, list):
        for item in value:
            yield from keys_in_json(item)


def referenced_keys(session: Session, candidates: Iterable[str]) -> set[str]:
    """The subset of ``candidates`` that some row (key column or JSON value) still names."""
    wanted = {key for key in candidates if key}
    found: set[str] = set()
    if not wanted:
        return found
    for column in key_columns():
        remaining = wanted - found
        if not remaining:
            return found
        if len(remaining) > _SCAN_THRESHOLD:
            query = select(column).where(column.is_not(None)).distinct()
            for (value,) in session.execute(query.execution_options(yield_per=10_000)):
                if value in remaining:
                    found.add(value)
        else:
            for chunk in chunked(sorted(remaining)):
                found.update(session.execute(select(column).where(in_values(session, column, chunk)).distinct()).scalars())
    for column in json_columns():
        remaining = wanted - found
        if not remaining:
            return found
        query = select(column).where(column.is_not(None))
        for (value,) in session.execute(query.execution_options(yield_per=1_000)):
            found.update(key for key in keys_in_json(value) if key in remaining)
    return found


def unreferenced_keys(session: Session, candidates: Iterable[str]) -> set[str]:
    """The subset of ``candidates`` no row names any more (safe to delete from the blob store)."""
    wanted = {key for key in candidates if key}
    return wanted - referenced_keys(session, wanted)
