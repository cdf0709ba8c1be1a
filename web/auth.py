"""Authentication: Flask-Login sessions for pages, ``Authorization: Bearer`` tokens for the API,
CSRF (Flask-WTF) on every state-changing request made with a session cookie, and roles.

API tokens are 40 random url-safe characters prefixed ``cl_``; only their SHA-256 is stored
(``api_tokens.token_hash``), so a leaked database does not leak tokens. Revoked tokens
(``revoked_at`` set) and inactive users are refused.

A session cookie carries the user's ``session_generation`` as it was at login; logout and a
password change increment it, so every cookie issued before stops working (on every device).
A login attempt costs one password-hash check whether the email exists or not.

Passwords are hashed with werkzeug's scrypt (2^15 rounds) unless ``CAMLABEL_PASSWORD_HASH`` names
another werkzeug method (``scrypt`` or ``pbkdf2``, with parameters as werkzeug writes them, e.g.
``pbkdf2:sha256:600000``). Stored hashes keep working whatever the setting: each names its method.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, abort, g, request
from flask import session as flask_session
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
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
SESSION_GENERATION_KEY = "_gen"  # the session cookie's copy of users.session_generation
MIN_PASSWORD_LENGTH = 8
PASSWORD_HASH_ENV = "CAMLABEL_PASSWORD_HASH"
DEFAULT_PASSWORD_HASH = "scrypt"
_PASSWORD_HASH_FAMILIES = ("scrypt", "pbkdf2")
_dummy_hash: tuple[str, str] | None = None  # (method, hash of a random password)


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
    _check_password(password)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise ValueError(f"a user {email!r} already exists")
    user = User(email=email, password_hash=hash_password(password), role=Role.admin if admin else Role.reviewer, active=True)
    session.add(user)
    session.flush()
    return user


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")


def password_hash_method() -> str:
    """Werkzeug's method string for new password hashes (module doc). ``ValueError`` names the
    setting when it is not a scrypt or pbkdf2 method."""
    method = os.environ.get(PASSWORD_HASH_ENV, "").strip() or DEFAULT_PASSWORD_HASH
    if method.split(":", 1)[0] not in _PASSWORD_HASH_FAMILIES:
        raise ValueError(f"{PASSWORD_HASH_ENV}={method!r}: must be a werkzeug scrypt or pbkdf2 method, "
                         "e.g. 'scrypt' or 'pbkdf2:sha256:600000'")
    return method


def hash_password(password: str) -> str:
    """A salted hash of ``password`` with :func:`password_hash_method`."""
    try:
        return generate_password_hash(password, method=password_hash_method())
    except (ValueError, TypeError) as exc:  # werkzeug's own refusal of the parameters
        raise ValueError(f"{PASSWORD_HASH_ENV}: {exc}") from None


def _unknown_user_hash() -> str:
    """A hash of a random password made like real ones, checked when the email is unknown or
    inactive so that a failed login costs the same hash work either way (no email oracle)."""
    global _dummy_hash
    method = password_hash_method()
    if _dummy_hash is None or _dummy_hash[0] != method:
        _dummy_hash = (method, hash_password(secrets.token_urlsafe(16)))
    return _dummy_hash[1]


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with this email and password, else ``None``.

    Exactly one password-hash check runs whatever the outcome (constant-time failure)."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or not user.active:
        check_password_hash(_unknown_user_hash(), password)
        return None
    if not check_password_hash(user.password_hash, password):
        return None
    return user


def set_password(session: Session, user: User, password: str) -> None:
    """Give ``user`` a new password and end all its sessions (caller commits)."""
    _check_password(password)
    user.password_hash = hash_password(password)
    end_sessions(session, user.id)


def end_sessions(session: Session, user_id: int) -> None:
    """Invalidate every session cookie of ``user_id`` issued so far (caller commits)."""
    session.execute(update(User).where(User.id == user_id).values(session_generation=User.session_generation + 1)
                    .execution_options(synchronize_session="fetch"))


def start_session(user: User) -> None:
    """Log ``user`` in on this request's session cookie, bound to its current session generation."""
    login_user(_as_current(user))
    flask_session[SESSION_GENERATION_KEY] = int(user.session_generation or 0)


def finish_session(db_session: Session) -> None:
    """Log out: end every session of the signed-in user (commits) and clear this cookie."""
    if current_user.is_authenticated and not getattr(current_user, "via_token", False):
        end_sessions(db_session, int(current_user.id))
        db_session.commit()
    logout_user()
    flask_session.pop(SESSION_GENERATION_KEY, None)


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
    now = datetime.now(UTC)
    last = row.last_used_at
    if last is None or (now - (last if last.tzinfo else last.replace(tzinfo=UTC))).total_seconds() > 60:
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        session.commit()
    return user


# -- request hooks ---------------------------------------------------------------------------
@login_manager.user_loader
def _load_user(user_id: str) -> CurrentUser | None:
    """The session's user if still active and the cookie's generation is current (one light
    query per request, no ORM row). A cookie from before a logout or password change: ``None``."""
    try:
        ident = int(user_id)
    except ValueError:
        return None
    if not -(2**63) <= ident < 2**63:
        return None
    row = db().execute(select(User.email, User.role, User.session_generation).where(User.id == ident, User.active.is_(True))).first()
    if row is None:
        return None
    generation = flask_session.get(SESSION_GENERATION_KEY)
    if type(generation) is not int or generation != row.session_generation:
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
        if request.blueprint == "api" and not current_user.is_authenticated:
            from web.errors import ApiError

            # No token and no session: the answer is "log in", not a CSRF failure.
            raise ApiError(401, "unauthorized", "log in or send 'Authorization: Bearer <token>'")
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

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the view's signature, which mypy does not follow
