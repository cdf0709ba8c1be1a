"""Fixtures of the worker tests: the ``camlabel`` CLI run in-process on a migrated SQLite runtime."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from web.cli import main


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
