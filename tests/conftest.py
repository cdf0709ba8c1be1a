"""Shared fixtures: real databases (SQLite file, PostgreSQL on 127.0.0.1:5432), migrated runtimes,
the real-photo dev dataset.

A missing PostgreSQL or Redis server or dev dataset skips the test; with ``CI=true`` it fails it
instead (:mod:`tests.prerequisites`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prerequisites import copy_photos, dev_dataset, require_service

PG_ADMIN_URL = os.environ.get("CAMLABEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("CAMLABEL_TEST_REDIS", "redis://127.0.0.1:6379")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    from worker.store.db import temporary_postgres_database

    with temporary_postgres_database(PG_ADMIN_URL, prefix="camlabel_test") as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'camlabel.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on both databases."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_TEST_URL


def _migrated_runtime(database_url: str, data_dir: Path):  # type: ignore[no-untyped-def]
    from worker.config import Settings
    from worker.runtime import configure
    from worker.store.migrate import upgrade

    upgrade(database_url)
    return configure(Settings(data_dir=data_dir, database_url=database_url, redis_url=None))


@pytest.fixture
def runtime(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A migrated database (both kinds) plus a blob store in ``tmp_path``; embedded worker mode."""
    rt = _migrated_runtime(db_url, tmp_path / "data")
    yield rt
    rt.dispose()


@pytest.fixture
def sqlite_runtime(sqlite_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Like ``runtime`` but SQLite only (for tests that are not about the database)."""
    rt = _migrated_runtime(sqlite_url, tmp_path / "data")
    yield rt
    rt.dispose()


@pytest.fixture(scope="session")
def shared_dataset() -> Path:
    """The real-photo dev collection (``raccoon/`` and ``kangaroo/`` folders of ``images/`` and VOC
    ``annotations/``): ``../shared/datasets/raccoon-kangaroo`` beside the checkout."""
    return dev_dataset("raccoon-kangaroo")


@pytest.fixture
def photos(shared_dataset: Path, tmp_path: Path) -> Path:
    """Four real photos per class in the folder layout."""
    return copy_photos(shared_dataset, tmp_path / "photos", 4)
