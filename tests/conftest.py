"""Shared fixtures: real databases (SQLite file, PostgreSQL on 127.0.0.1:5432), migrated runtimes,
the real-photo dev dataset.

A missing PostgreSQL or Redis server or dev dataset skips the test; with ``CI=true`` it fails it
instead (:mod:`tests.prerequisites`).

Migrated databases come from one migration per test process: a SQLite test gets a copy of a
migrated file; a PostgreSQL test gets a copy of a migrated template database, emptied and handed to
the next test afterwards (:mod:`tests.databases`). ``tests/worker/store/test_migrations.py`` runs
the migrations themselves on empty databases (``db_url``).

The fast tier runs on pytest-xdist workers, one test file at a time per worker (``-n auto --dist
loadfile`` in ``pyproject.toml``, :func:`pytest_xdist_auto_num_workers`); a run that may hold slow
or browser tests runs in one process.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression
from sqlalchemy.engine import make_url

from tests.databases import PostgresPool
from tests.prerequisites import copy_photos, dev_dataset, require_service
from worker.config import Settings
from worker.runtime import Runtime, configure
from worker.store.db import temporary_postgres_database
from worker.store.migrate import upgrade

PG_ADMIN_URL = os.environ.get("CAMLABEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("CAMLABEL_TEST_REDIS", "redis://127.0.0.1:6379")

# Accounts made by the tests (and by the servers and CLIs they start, which inherit the
# environment) get werkzeug's pbkdf2 at 1,000 rounds instead of scrypt's 0.15 s per hash: the same
# code path, hundreds of logins cheaper. Tests of the hash itself set the method they need.
os.environ.setdefault("CAMLABEL_PASSWORD_HASH", "pbkdf2:sha256:1000")


def _leaves_out_slow_and_browser_tests(config: pytest.Config) -> bool:
    """True when the run's ``-m`` expression deselects every test marked ``slow`` or ``browser``."""
    markexpr = config.getoption("markexpr") or ""
    if not markexpr:
        return False
    expression = Expression.compile(markexpr)
    return not (_selects(expression, "slow") or _selects(expression, "browser"))


def _selects(expression: Expression, mark: str) -> bool:
    """Whether ``expression`` selects a test that carries ``mark`` alone."""
    return expression.evaluate(lambda name, /, **_: name == mark)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (``pyproject.toml``): one pytest-xdist worker per CPU for a run that leaves out the
    slow and browser tests (the fast tier); a run that may hold them stays in one process, as they
    start processes, count on the CPUs they time and share the fixed Redis test database."""
    return (os.cpu_count() or 1) if _leaves_out_slow_and_browser_tests(config) else 0


def pytest_configure(config: pytest.Config) -> None:
    """On an xdist worker torch's ops get the worker's share of the CPUs: N workers with a thread team
    of N each would oversubscribe the cores (a small model then trains three times slower)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        import torch  # only on a worker: a run in one process keeps torch's default

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workerinput["workercount"])))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    with temporary_postgres_database(PG_ADMIN_URL, prefix="camlabel_test") as url:
        yield url


@pytest.fixture(scope="session")
def pg_pool() -> Iterator[PostgresPool]:
    """Migrated PostgreSQL databases of this test process: copies of a template migrated once."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    with temporary_postgres_database(PG_ADMIN_URL, prefix="camlabel_template") as template_url:
        upgrade(template_url)
        pool = PostgresPool(PG_ADMIN_URL, make_url(template_url).database or "")
        try:
            yield pool
        finally:
            pool.close()


@pytest.fixture
def migrated_pg_url(pg_pool: PostgresPool) -> Iterator[str]:
    """A PostgreSQL database at the head revision holding no rows, for one test (:mod:`tests.databases`)."""
    url = pg_pool.take()
    yield url
    pg_pool.give_back(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of a SQLite file that does not exist yet."""
    return f"sqlite:///{tmp_path / 'camlabel.db'}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head, made once per test process (copied, never opened again)."""
    path = tmp_path_factory.mktemp("template") / "camlabel.db"
    upgrade(f"sqlite:///{path}")  # the migration's engine is disposed: no -wal or -shm file is left
    return path


@pytest.fixture
def migrated_sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A SQLite file at the head revision for one test (a copy of ``sqlite_template``)."""
    path = tmp_path / "camlabel.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each migration test runs on both databases, empty."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_db_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on both databases, migrated to head."""
    return request.getfixturevalue("migrated_sqlite_url" if request.param == "sqlite" else "migrated_pg_url")


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_TEST_URL


@pytest.fixture
def runtime(migrated_db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A migrated database (both kinds) plus a blob store in ``tmp_path``; embedded worker mode."""
    rt = configure(Settings(data_dir=tmp_path / "data", database_url=migrated_db_url, redis_url=None))
    yield rt
    rt.dispose()


@pytest.fixture
def sqlite_runtime(migrated_sqlite_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """Like ``runtime`` but SQLite only (for tests that are not about the database)."""
    rt = configure(Settings(data_dir=tmp_path / "data", database_url=migrated_sqlite_url, redis_url=None))
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
