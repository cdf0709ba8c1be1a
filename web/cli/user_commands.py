"""``camlabel users create``, ``camlabel tokens create`` and ``camlabel run`` (serve the app)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from web.auth import create_token, set_password
from web.cli.failures import reported
from web.services.accounts import add_user
from worker.queue.embedded import ensure_worker
from worker.store.db import session_scope
from worker.store.models import User


def _sessions() -> sessionmaker[Session]:
    return current_app.extensions["camlabel"].sessions


@click.group("users")
def users() -> None:
    """Manage accounts."""


@users.command("create")
@click.argument("email")
@click.option("--password", required=True, help="At least 8 characters.")
@click.option("--admin", is_flag=True, help="Give the admin role (users, deletes).")
@with_appcontext
def users_create(email: str, password: str, admin: bool) -> None:
    """Create an account EMAIL (role reviewer unless --admin)."""
    with _sessions()() as session, reported():
        user = add_user(session, email, password, admin=admin)  # the same rules as the dashboard and the API
        user_id, role = user.id, user.role
    click.echo(f"created user {user_id} {email.strip().lower()} ({getattr(role, 'value', role)})")


@users.command("set-password")
@click.argument("email")
@click.option("--password", required=True, help="At least 8 characters.")
@with_appcontext
def users_set_password(email: str, password: str) -> None:
    """Give EMAIL a new password; every session it had is logged out."""
    try:
        with session_scope(_sessions()) as session:
            user = session.scalar(select(User).where(User.email == email.strip().lower()))
            if user is None:
                raise click.ClickException(f"no user {email!r}")
            set_password(session, user, password)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"password changed for {email.strip().lower()}; its sessions are logged out")


@click.group("tokens")
def tokens() -> None:
    """Manage API tokens."""


@tokens.command("create")
@click.argument("email")
@click.option("--name", default=None, help="A label for the token.")
@with_appcontext
def tokens_create(email: str, name: str | None) -> None:
    """Create an API token for EMAIL; the token is printed as the last line (shown once)."""
    with session_scope(_sessions()) as session:
        user = session.scalar(select(User).where(User.email == email.strip().lower()))
        if user is None:
            raise click.ClickException(f"no user {email!r}; create it with 'camlabel users create'")
        _row, secret = create_token(session, user.id, name)
    click.echo(f"token for {user.email} (send as 'Authorization: Bearer <token>'):")
    click.echo(secret)


@click.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@with_appcontext
def run(host: str, port: int) -> None:
    """Serve the dashboard and API (threaded WSGI server). With no REDIS_URL the embedded
    in-process worker is started too, so jobs run with no Redis and no separate worker."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the LocalProxy's own method, absent from Flask's types
    runtime = app.extensions["camlabel"]
    if runtime.settings.embedded:
        ensure_worker()
        click.echo("embedded worker started (no REDIS_URL)")
    server = make_server(host, port, app, threaded=True)
    click.echo(f"camlabel serving on http://{host}:{server.server_port}/ (data dir {runtime.settings.data_dir})", err=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


COMMANDS: list[click.Command] = [users, tokens, run]
