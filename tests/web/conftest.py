"""Fixtures of the web tests: apps from the real factory on migrated databases (SQLite, and
PostgreSQL where API behaviour is database-sensitive), logged-in clients with real CSRF, and
row factories that write real image blobs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.web.helpers import Browser, Factory, login

TEST_SECRET_KEY = "test-only-3b9f1c0d7e2a4f6b8c5d9e1a0f3b7c2d"  # strong enough for the key check, never deployed


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """``make_app(db_url, **config)``: migrate ``db_url`` and build the app on it (embedded mode);
    ``migrate=False`` for a database that is already at head (``migrated_*_url``)."""
    from web import create_app
    from worker.store.migrate import upgrade

    apps: list[Flask] = []

    def _make(db_url: str, *, migrate: bool = True, **config: Any) -> Flask:
        if migrate:
            upgrade(db_url)
        app = create_app({"DATABASE_URL": db_url, "CAMLABEL_DATA_DIR": str(tmp_path / "data"), "REDIS_URL": None,
                          "SECRET_KEY": TEST_SECRET_KEY, **config})
        apps.append(app)
        return app

    yield _make
    for app in apps:
        app.extensions["camlabel"].dispose()


@pytest.fixture
def app(migrated_sqlite_url: str, make_app: Callable[..., Flask]) -> Flask:
    """The app on a migrated SQLite database."""
    return make_app(migrated_sqlite_url, migrate=False)


@pytest.fixture
def db_app(migrated_db_url: str, make_app: Callable[..., Flask]) -> Flask:
    """The app on SQLite and on PostgreSQL (parametrized through ``migrated_db_url``; the database is
    asked for first, so the app lets go of it before it is emptied for the next test)."""
    return make_app(migrated_db_url, migrate=False)


@pytest.fixture
def factory(app: Flask) -> Factory:
    return Factory(app)


@pytest.fixture
def db_factory(db_app: Flask) -> Factory:
    return Factory(db_app)


@pytest.fixture
def reviewer(app: Flask, factory: Factory) -> Browser:
    factory.user("reviewer@example.com")
    return login(app.test_client(), "reviewer@example.com")


@pytest.fixture
def admin(app: Flask, factory: Factory) -> Browser:
    factory.user("admin@example.com", admin=True)
    return login(app.test_client(), "admin@example.com")


@pytest.fixture
def reviewer_setup(db_app: Flask, db_factory: Factory) -> tuple[Browser, Factory, int, dict[str, int]]:
    """On SQLite and PostgreSQL: a logged-in reviewer, the row factory, a collection id and its
    categories by name (``db_factory.collection()``)."""
    db_factory.user("r@example.com")
    browser = login(db_app.test_client(), "r@example.com")
    cid, cats = db_factory.collection()
    return browser, db_factory, cid, cats
