"""Migrated PostgreSQL databases for tests, reused instead of made and dropped for each test.

Making a database (even as a copy of a migrated template) and dropping it costs a PostgreSQL
server about 0.3 s and more when the machine is busy; emptying a small one costs about 15 ms.
:class:`PostgresPool` hands each test a database at the head revision holding no rows, with its
sequences restarted (ids start at 1 as in a new database). A database that cannot be emptied as it
was made (its schema, revision or connection settings changed, a lock still held) is not handed
out again; every database of the pool is dropped when the pool closes.
"""

from __future__ import annotations

from contextlib import ExitStack

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from worker.store.db import temporary_postgres_database
from worker.store.models import Base

VERSION_TABLE = "alembic_version"


class PostgresPool:
    """Databases copied from ``template`` (a database at head) on the server of ``admin_url``."""

    def __init__(self, admin_url: str, template: str, *, prefix: str = "camlabel_test") -> None:
        self.admin_url, self.template, self.prefix = admin_url, template, prefix
        self._made = ExitStack()
        self._free: list[str] = []
        self._revision: str | None = None

    def take(self) -> str:
        """The URL of an empty database at head, for one test."""
        if self._free:
            return self._free.pop()
        url = self._made.enter_context(temporary_postgres_database(self.admin_url, prefix=self.prefix, template=self.template))
        if self._revision is None:
            self._revision = self._version(url)
        return url

    def give_back(self, url: str) -> None:
        """Empty the database ``url`` for the next test; one that cannot be emptied is left to :meth:`close`."""
        if self._empty(url):
            self._free.append(url)

    def close(self) -> None:
        """Drop every database the pool made."""
        self._free.clear()
        self._made.close()

    @staticmethod
    def _version(url: str) -> str:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                return str(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one())
        finally:
            engine.dispose()

    def _empty(self, url: str) -> bool:
        """Delete every row (children first) and restart every sequence, in one transaction with a
        short lock timeout; False when the database is no longer as the template made it."""
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                connection.execute(text("SET LOCAL lock_timeout = '5s'"))
                tables = set(inspect(connection).get_table_names())
                if tables != {table.name for table in Base.metadata.sorted_tables} | {VERSION_TABLE}:
                    return False
                if connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one() != self._revision:
                    return False
                for table in reversed(Base.metadata.sorted_tables):
                    connection.execute(table.delete())
                sequences = connection.execute(text(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind = 'S' AND n.nspname = current_schema()")).scalars().all()
                for sequence in sequences:
                    connection.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))
            return True
        except SQLAlchemyError:
            return False
        finally:
            engine.dispose()
