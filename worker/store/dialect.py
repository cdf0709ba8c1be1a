"""Dialect-specific statements shared by the bulk writers (SQLite and PostgreSQL only)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Enum, Executable, String, Table, any_, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator, TypeEngine

T = TypeVar("T")

#: Rows per statement. PostgreSQL allows 65535 bind parameters per statement and SQLite
#: 32766 (3.32+); 1000 rows of up to 16 columns stay below both.
CHUNK = 1000


def dialect_name(session: Session) -> str:
    """``"sqlite"`` or ``"postgresql"``; anything else is refused with a clear error."""
    name = session.get_bind().dialect.name
    if name not in ("sqlite", "postgresql"):
        raise RuntimeError(f"camlabel supports SQLite and PostgreSQL, not {name!r}")
    return name


def upsert_insert(session: Session, table: Table) -> Any:
    """``INSERT`` of the session's dialect that offers ``on_conflict_do_nothing/do_update``."""
    if dialect_name(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def chunked(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: Rows per statement on PostgreSQL, where each column travels as one array parameter.
PG_CHUNK = 10_000


def _array_item_type(column_type: TypeEngine[Any]) -> TypeEngine[Any]:
    """The element type used for a column's array parameter (enums travel as their string values)."""
    if isinstance(column_type, Enum):
        return String()
    if isinstance(column_type, TypeDecorator):
        return column_type.impl_instance
    return column_type


def insert_rows(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    on_conflict: Callable[[Any], Any] | None = None,
    returning: Sequence[Any] = (),
) -> list[Sequence[Any]]:
    """Insert many rows with few statements; returns the ``returning`` rows (all chunks).

    Every row must have every name in ``columns``, with values already in database form
    (enum values as strings, datetimes timezone-aware). ``on_conflict`` gets the dialect's
    insert statement and adds ``on_conflict_do_nothing/do_update``.

    PostgreSQL: ``INSERT .. SELECT * FROM unnest(:col1[], :col2[], ..)``: one array
    parameter per column, so a 10,000-row chunk is one short statement (psycopg parses
    SQL text in Python, and a 10,000-placeholder VALUES list costs more than the insert).
    SQLite: ``executemany`` of one prepared statement (the sqlite3 module loops in C).
    """
    out: list[Sequence[Any]] = []
    if not rows:
        return out
    if dialect_name(session) == "postgresql":
        params = [bindparam(f"p_{name}", type_=ARRAY(_array_item_type(table.c[name].type))) for name in columns]
        values = func.unnest(*params).table_valued(*columns).render_derived()
        pg_insert = postgresql.insert(table).from_select(list(columns), select(*[values.c[name] for name in columns]))
        if on_conflict is not None:
            pg_insert = on_conflict(pg_insert)
        pg_stmt: Executable = pg_insert.returning(*returning) if returning else pg_insert
        for chunk in chunked(rows, PG_CHUNK):
            result = session.execute(pg_stmt, {f"p_{name}": [row[name] for row in chunk] for name in columns})
            if returning:
                out.extend(result.all())
        return out
    lite_insert = sqlite.insert(table)
    if on_conflict is not None:
        lite_insert = on_conflict(lite_insert)
    lite_stmt: Executable = lite_insert.returning(*returning) if returning else lite_insert
    for chunk in chunked(rows):
        result = session.execute(lite_stmt, [{name: row[name] for name in columns} for row in chunk])
        if returning:
            out.extend(result.all())
    return out


def rows_of(result: Iterable[Any]) -> Iterator[Sequence[Any]]:
    """The rows of a select over columns of unknown type (Core ``Table`` columns), typed as
    sequences of ``Any``: mypy unpacks a ``Row`` of unknown length to ``object``."""
    return iter(result)


def copy_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> int:
    """Append rows with no conflict handling and nothing returned; returns how many.

    PostgreSQL: ``COPY table (columns) FROM STDIN`` on the session's own connection (same
    transaction), about twice as fast as ``INSERT .. unnest``. SQLite: :func:`insert_rows`.
    Values must be in database form (enum values as strings, datetimes timezone-aware).
    """
    if not rows:
        return 0
    if dialect_name(session) != "postgresql":
        insert_rows(session, table, rows, columns)
        return len(rows)
    for name in columns:
        table.c[name]  # noqa: B018 - KeyError for a column the table lacks, before any SQL is built
    driver_connection = session.connection().connection.driver_connection
    assert driver_connection is not None  # the session's connection is open
    quoted = ", ".join(f'"{name}"' for name in columns)
    with driver_connection.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(tuple(row[name] for name in columns))
    return len(rows)


def in_values(session: Session, column: Any, values: Sequence[Any]) -> Any:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``, one parameter however many values."""
    if dialect_name(session) == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(_array_item_type(column.type))))
    return column.in_(list(values))
