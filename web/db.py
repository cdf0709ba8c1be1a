"""Per-request database session and runtime access for views."""

from __future__ import annotations

from flask import current_app, g
from sqlalchemy.orm import Session

from worker.runtime import Runtime
from worker.store.blobs import LocalBlobStore


def runtime() -> Runtime:
    """The worker runtime this app was configured with."""
    return current_app.extensions["camlabel"]


def blobs() -> LocalBlobStore:
    return runtime().blobs


def db() -> Session:
    """The request's session (opened on first use, closed at teardown; commit explicitly)."""
    if "db_session" not in g:
        g.db_session = runtime().sessions()
    return g.db_session


def close_db(_exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        if _exc is not None:
            session.rollback()
        session.close()
