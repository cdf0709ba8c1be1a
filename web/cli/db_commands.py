"""``camlabel db upgrade [REV]``, ``camlabel db downgrade REV``, ``camlabel db current``.

They run the Alembic migrations in ``migrations/`` (the only way the schema is made) against
the database of ``DATABASE_URL`` (default: the SQLite file in ``CAMLABEL_DATA_DIR``). They do
not build the Flask app.
"""

from __future__ import annotations

import click
from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from worker.config import Settings
from worker.store import migrate


def _database_url() -> str:
    return Settings.from_env().database_url


def _shown(url: str) -> str:
    """The URL with any password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def _run(action: str, url: str, revision: str) -> None:
    try:
        if action == "upgrade":
            migrate.upgrade(url, revision)
        else:
            migrate.downgrade(url, revision)
    except CommandError as exc:
        raise click.ClickException(f"{action} to {revision!r} failed: {exc}") from None
    except SQLAlchemyError as exc:
        raise click.ClickException(f"{action} to {revision!r} failed on {_shown(url)}: {exc.__class__.__name__}: {exc}") from None


@click.group("db")
def db() -> None:
    """Database schema (Alembic migrations) of DATABASE_URL."""


@db.command("upgrade")
@click.argument("revision", default="head")
def upgrade_command(revision: str) -> None:
    """Migrate the database up to REVISION (default: head)."""
    url = _database_url()
    _run("upgrade", url, revision)
    click.echo(f"{_shown(url)} is at {_heads(url)}")


@db.command("downgrade")
@click.argument("revision")
def downgrade_command(revision: str) -> None:
    """Migrate the database down to REVISION ("base" removes every table; "-1" steps back one)."""
    url = _database_url()
    _run("downgrade", url, revision)
    click.echo(f"{_shown(url)} is at {_heads(url)}")


@db.command("current")
def current_command() -> None:
    """Print the revision the database is at ("base" for an empty database) and the newest one."""
    url = _database_url()
    try:
        current = _heads(url)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot read {_shown(url)}: {exc.__class__.__name__}: {exc}") from None
    head = migrate.head_revision()
    click.echo(f"{_shown(url)} is at {current} (head: {head})")


def _heads(url: str) -> str:
    return ", ".join(sorted(migrate.current_heads(url))) or "base"


COMMANDS: list[click.Command] = [db]
