"""The signed-in user, API tokens (own, revocable) and users (admin)."""

from __future__ import annotations

from datetime import datetime, timezone

from flask_login import current_user
from sqlalchemy import select

from web.api import bp, id_page, json_body
from web.auth import admin_required, authenticate, create_token, create_user, set_password
from web.db import db
from web.errors import ApiError
from web.validation import json_bool, json_str
from worker.store.models import ApiToken, Role, User


def _user_json(user: User) -> dict:
    return {"id": user.id, "email": user.email, "role": Role(user.role).value, "active": user.active}


@bp.get("/me")
def me() -> dict:
    return {"id": current_user.id, "email": current_user.email, "role": current_user.role}


@bp.post("/me/password")
def change_password() -> tuple[str, int]:
    """Change your password (``current_password``, ``new_password``); every session of yours ends."""
    data = json_body()
    current = json_str(data, "current_password", max_length=1024)
    new = json_str(data, "new_password", max_length=1024)
    session = db()
    user = session.get(User, current_user.id)
    if user is None or current is None or new is None or authenticate(session, user.email, current) is None:
        raise ApiError(403, "wrong_password", "current_password is wrong")
    try:
        set_password(session, user, new)
    except ValueError as exc:
        raise ApiError(400, "bad_password", f"new_password: {exc}", field="new_password") from exc
    session.commit()
    return "", 204


@bp.get("/tokens")
def list_tokens() -> dict:
    rows, next_cursor = id_page(db(), select(ApiToken).where(ApiToken.user_id == current_user.id), ApiToken.id)
    return {"items": [{"id": t.id, "prefix": t.prefix, "name": t.name, "revoked": t.revoked_at is not None,
                       "created_at": t.created_at.isoformat() if t.created_at else None} for t in rows],
            "next_cursor": next_cursor}


@bp.post("/tokens")
def post_token() -> tuple[dict, int]:
    session = db()
    name = json_str(json_body(), "name", required=False, max_length=200)
    row, secret = create_token(session, current_user.id, name or None)
    session.commit()
    return {"id": row.id, "prefix": row.prefix, "name": row.name, "token": secret}, 201


@bp.delete("/tokens/<int:token_id>")
def revoke_token(token_id: int) -> tuple[str, int]:
    session = db()
    row = session.get(ApiToken, token_id)
    if row is None or (row.user_id != current_user.id and not current_user.is_admin):
        raise ApiError(404, "not_found", f"no token {token_id}")
    row.revoked_at = datetime.now(timezone.utc)
    session.commit()
    return "", 204


@bp.get("/users")
@admin_required
def list_users() -> dict:
    rows, next_cursor = id_page(db(), select(User), User.id)
    return {"items": [_user_json(u) for u in rows], "next_cursor": next_cursor}


@bp.post("/users")
@admin_required
def post_user() -> tuple[dict, int]:
    session = db()
    data = json_body()
    try:
        user = create_user(session, json_str(data, "email", max_length=320) or "", json_str(data, "password", max_length=1024) or "",
                           admin=json_bool(data, "admin"))
    except ValueError as exc:
        raise ApiError(400, "bad_user", str(exc)) from exc
    session.commit()
    return _user_json(user), 201
