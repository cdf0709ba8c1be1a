"""Fixtures for the worker area: real photo subsets, a CLI runner, real ``camlabel worker`` processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from web.cli import main

from tests.worker.helpers import REDIS_TEST_DB, Cli, Workers, copy_photos


@pytest.fixture
def photos(shared_dataset: Path, tmp_path: Path) -> Path:
    """Four real photos per class in the folder layout."""
    return copy_photos(shared_dataset, tmp_path / "photos", 4)


@pytest.fixture
def redis_db_url(redis_url: str) -> Iterator[str]:
    """A spare Redis database number, flushed before and after the test."""
    import redis

    url = f"{redis_url.rstrip('/')}/{REDIS_TEST_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def queue_env(pg_url: str, redis_db_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment of a Redis + PostgreSQL deployment with short leases and tiny chunks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMLABEL_")}
    env.update(
        DATABASE_URL=pg_url, REDIS_URL=redis_db_url, CAMLABEL_DATA_DIR=str(tmp_path / "data"), CAMLABEL_JOB_LEASE_S="4",
        CAMLABEL_CHUNK_SIZE="2", CAMLABEL_DEVICE="cpu", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
    )
    return env


@pytest.fixture
def cli(queue_env: dict[str, str], tmp_path: Path) -> Cli:
    runner = Cli(queue_env, tmp_path)
    runner("db", "upgrade")
    return runner


@pytest.fixture
def db_sessions(queue_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Sessions on the test's PostgreSQL database (for checking what workers wrote)."""
    from worker.store.db import make_engine, make_session_factory

    engine = make_engine(queue_env["DATABASE_URL"])
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def workers(queue_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "logs"
    logs.mkdir()
    pool = Workers(queue_env, logs)
    yield pool
    pool.stop_all()


@pytest.fixture
def run(sqlite_runtime, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Invoke ``camlabel`` in-process against the migrated SQLite runtime."""
    settings = sqlite_runtime.settings
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CAMLABEL_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("CAMLABEL_CHUNK_SIZE", "3")
    monkeypatch.setenv("CAMLABEL_DEVICE", "cpu")
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):  # type: ignore[no-untyped-def]
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == code, f"camlabel {' '.join(args)} -> {result.exit_code}\n{result.output}"
        return result

    return invoke
