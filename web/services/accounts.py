"""Accounts: users, passwords and API tokens as the pages and the API change them (the
password and token rules themselves are :mod:`web.auth`'s, shared with the CLI)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from web.auth import authenticate, create_user, set_password
from web.services.errors import Forbidden, Invalid, NotFound
from worker.store.models import ApiToken, User


def tokens_of(session: Session, user_id: int) -> list[ApiToken]:
    """The API tokens of ``user_id`` (revoked ones too), oldest first."""
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)))


def revoke_token(session: Session, token_id: int, *, user_id: int, any_user: bool = False) -> None:
    """Revoke token ``token_id`` of ``user_id`` (of anyone with ``any_user``; commits).
    ``NotFound`` for a token that does not exist or is someone else's."""
    row = session.get(ApiToken, token_id)
    if row is None or (row.user_id != user_id and not any_user):
        raise NotFound("not_found", f"no token {token_id}")
    row.revoked_at = datetime.now(UTC)
    session.commit()


def change_password(session: Session, user_id: int, current: str, new: str) -> None:
    """Give ``user_id`` the password ``new`` once ``current`` is checked (commits); every session
    of the account ends. ``Forbidden`` for a wrong ``current``, ``Invalid`` for a ``new`` the
    password rule refuses."""
    user = session.get(User, user_id)
    if user is None or authenticate(session, user.email, current) is None:
        raise Forbidden("wrong_password", "current_password is wrong")
    try:
        set_password(session, user, new)
    except ValueError as exc:
        session.rollback()
        raise Invalid("bad_password", f"new_password: {exc}", field="new_password") from exc
    session.commit()


def add_user(session: Session, email: str, password: str, *, admin: bool) -> User:
    """Add an account (commits); ``Invalid`` for a bad email, a short password or a taken email."""
    try:
        user = create_user(session, email, password, admin=admin)
    except ValueError as exc:
        session.rollback()
        raise Invalid("bad_user", str(exc)) from exc
    session.commit()
    return user


def all_users(session: Session) -> list[User]:
    """Every account, oldest first."""
    return list(session.scalars(select(User).order_by(User.id)))
