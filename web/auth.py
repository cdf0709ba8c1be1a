"""Authentication: Flask-Login sessions for pages, ``Authorization: Bearer`` tokens for the API,
CSRF (Flask-WTF) on every state-changing request made with a session cookie, and roles.

API tokens are 40 random url-safe characters prefixed ``cl_``; only their SHA-256 is stored
(``api_tokens.token_hash``), so a leaked database does not leak tokens. Revoked tokens
(``revoked_at`` set) and inactive users are refused.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, abort, g, request
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from web.db import close_db, db
from worker.store.models import ApiToken, Role, User

login_manager = LoginManager()
csrf = CSRFProtect()

F = TypeVar("F", bound=Callable[..., Any])
TOKEN_PREFIX = "cl_"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


@dataclass
class CurrentUser(UserMixin):
    """The signed-in account as seen by views (a plain object, never a live ORM row)."""

    id: int
    email: str
    role: str
    via_token: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == Role.admin.value

    def get_id(self) -> str:
        return str(self.id)


def _as_current(user: User, *, via_token: bool = False) -> CurrentUser:
    return CurrentUser(id=user.id, email=user.email, role=Role(user.role).value, via_token=via_token)


# -- accounts and tokens (shared with the CLI) -------------------------------------------------
def create_user(session: Session, email: str, password: str, *, admin: bool = False) -> User:
    """Add an account (caller commits). Raises ``ValueError`` for a bad email, short password or duplicate."""
    email = email.strip().lower()
    if "@" not in email or len(email) > 320:
        raise ValueError(f"not an email address: {email!r}")
    if len(password) < 8:
        raise ValueError("password must have at least 8 characters")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise ValueError(f"a user {email!r} already exists")
    user = User(email=email, password_hash=generate_password_hash(password), role=Role.admin if admin else Role.reviewer, active=True)
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with this email and password, else ``None``."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or not user.active or not check_password_hash(user.password_hash, password):
        return None
    return user


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, user_id: int, name: str | None = None) -> tuple[ApiToken, str]:
    """Make a token for ``user_id``; returns the row and the secret (shown once, never stored)."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(30)
    row = ApiToken(user_id=user_id, token_hash=hash_token(secret), prefix=secret[:10], name=name)
    session.add(row)
    session.flush()
    return row, secret


def user_for_token(session: Session, secret: str) -> User | None:
    """The active owner of an unrevoked token; records its last use."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret), ApiToken.revoked_at.is_(None)))
    if row is None:
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        return None
    now = datetime.now(timezone.utc)
    last = row.last_used_at
    if last is None or (now - (last if last.tzinfo else last.replace(tzinfo=timezone.utc))).total_seconds() > 60:
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        session.commit()
    return user


# -- request hooks ---------------------------------------------------------------------------
@login_manager.user_loader
def _load_user(user_id: str) -> CurrentUser | None:
    """The session's user if still active (one light query per request, no ORM row)."""
    try:
        ident = int(user_id)
    except ValueError:
        return None
    row = db().execute(select(User.email, User.role).where(User.id == ident, User.active.is_(True))).first()
    if row is None:
        return None
    return CurrentUser(id=ident, email=row.email, role=Role(row.role).value)


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _before_request() -> None:
    """Bearer token first (no CSRF: no cookie is involved), else the session cookie plus CSRF."""
    token = _bearer_token()
    if token is not None:
        user = user_for_token(db(), token)
        if user is None:
            from web.errors import ApiError

            raise ApiError(401, "invalid_token", "the API token is unknown, revoked or its user is inactive")
        g._login_user = _as_current(user, via_token=True)  # Flask-Login's request-scoped user slot
        return
    if request.method not in _SAFE_METHODS:
        csrf.protect()


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "dashboard.login"
    login_manager.session_protection = "basic"
    csrf.init_app(app)
    app.before_request(_before_request)
    app.teardown_appcontext(close_db)


# -- guards ----------------------------------------------------------------------------------
def admin_required(view: F) -> F:
    """403 unless the user is an admin (users, deletes)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_authenticated:
            abort(401)
        if not current_user.is_admin:
            abort(403, description="this needs the admin role")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
