"""Alembic migrations are the schema: up/down/up on real databases, models == migrations, CLI, SQLite pragmas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Column, Integer, MetaData, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from worker.config import Settings
from worker.store.db import make_engine
from worker.store.migrate import current_heads, downgrade, head_revision, upgrade
from worker.store.models import Base, Box, Collection, Job

APP_TABLES = {t.name for t in Base.metadata.sorted_tables}



def test_migrations_create_every_table(runtime) -> None:  # type: ignore[no-untyped-def]
    tables = set(inspect(runtime.engine).get_table_names())
    assert {"collections", "images", "boxes", "jobs", "users", "api_tokens"} <= tables


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _diff(url: str, metadata: MetaData) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def test_chain_is_linear_with_one_head() -> None:
    assert head_revision() == "0009"


def test_upgrade_downgrade_base_upgrade(db_url: str) -> None:
    upgrade(db_url)
    assert current_heads(db_url) == {head_revision()}
    assert APP_TABLES <= _tables(db_url)

    downgrade(db_url, "base")
    assert current_heads(db_url) == set()
    assert _tables(db_url) - {"alembic_version"} == set()

    upgrade(db_url)
    assert current_heads(db_url) == {head_revision()}
    assert APP_TABLES <= _tables(db_url)


def test_every_revision_steps_down_and_up(db_url: str) -> None:
    upgrade(db_url)
    for target in ("0004", "0003", "0002", "0001"):
        downgrade(db_url, target)
        assert current_heads(db_url) == {target}
    upgrade(db_url)
    assert current_heads(db_url) == {head_revision()}


def test_models_match_migrations(db_url: str) -> None:
    """Autogenerate finds nothing to add: the models and revisions 0001..head describe one schema."""
    upgrade(db_url)
    assert _diff(db_url, Base.metadata) == []


def test_model_migration_check_detects_a_mismatch(db_url: str) -> None:
    """The check above can fail: a model column no revision creates is reported."""
    upgrade(db_url)
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    metadata.tables["images"].append_column(Column("not_migrated", Integer, nullable=True))
    diff = _diff(db_url, metadata)
    assert [(op[0], op[3].name) for op in diff if op[0] == "add_column"] == [("add_column", "not_migrated")]


def test_box_geometry_check_constraint_survives_all_revisions(runtime) -> None:  # type: ignore[no-untyped-def]
    with runtime.sessions() as session:
        collection = Collection(name="c")
        session.add(collection)
        session.flush()
        session.execute(text("INSERT INTO categories (collection_id, name, created_at) VALUES (:c, 'x', :t)"), {"c": collection.id, "t": datetime.now(UTC)})
        session.execute(
            text("INSERT INTO images (collection_id, sha256, rel_path, status, n_boxes, created_at) VALUES (:c, :s, 'a.jpg', 'ok', 0, :t)"),
            {"c": collection.id, "s": "0" * 64, "t": datetime.now(UTC)},
        )
        image_id, category_id = session.execute(text("SELECT images.id, categories.id FROM images, categories")).one()
        session.commit()
        row = {"image_id": image_id, "category_id": category_id, "y1": 0.0, "y2": 5.0, "source": "cam", "status": "proposed",
               "version": 1, "created_at": datetime.now(UTC), "updated_at": datetime.now(UTC)}
        session.execute(insert(Box.__table__), [{**row, "x1": 1.0, "x2": 4.0}])
        session.commit()
        with pytest.raises(IntegrityError):
            session.execute(insert(Box.__table__), [{**row, "x1": 4.0, "x2": 1.0}])
        session.rollback()


def test_datetimes_read_back_timezone_aware_utc(runtime) -> None:  # type: ignore[no-untyped-def]
    written = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    with runtime.sessions() as session:
        job = Job(kind="import", params={}, started_at=written)
        session.add(job)
        session.commit()
        job_id = job.id
    with runtime.sessions() as session:
        started = session.execute(select(Job.started_at).where(Job.id == job_id)).scalar_one()
    assert started.tzinfo is not None and started.utcoffset() == timedelta(0)
    assert started == written


def test_sqlite_default_in_data_dir_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    settings = Settings.from_env({"CAMLABEL_DATA_DIR": str(tmp_path / "data")})
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'camlabel.db'}"
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            with pytest.raises(IntegrityError):
                connection.execute(text("INSERT INTO categories (collection_id, name, created_at) VALUES (424242, 'x', '2026-01-01')"))
            connection.rollback()
    finally:
        engine.dispose()
    assert (tmp_path / "data" / "camlabel.db").is_file()


def test_cli_upgrade_current_downgrade(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from web.cli import main

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("CAMLABEL_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    result = runner.invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert current_heads(db_url) == {head_revision()}
    assert f"is at {head_revision()}" in result.output

    result = runner.invoke(main, ["db", "downgrade", "0002"])
    assert result.exit_code == 0, result.output
    assert current_heads(db_url) == {"0002"}

    result = runner.invoke(main, ["db", "current"])
    assert result.exit_code == 0, result.output
    assert f"is at 0002 (head: {head_revision()})" in result.output

    result = runner.invoke(main, ["db", "downgrade", "base"])
    assert result.exit_code == 0, result.output
    assert _tables(db_url) - {"alembic_version"} == set()

    result = runner.invoke(main, ["db", "upgrade", "no-such-rev"])
    assert result.exit_code == 1
    assert "no-such-rev" in result.output
    assert current_heads(db_url) == set()

    result = runner.invoke(main, ["db", "downgrade"])
    assert result.exit_code == 2  # REVISION is required: nothing is dropped by accident
    assert current_heads(db_url) == set()
