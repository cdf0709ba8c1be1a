"""The signed-in user, API tokens (own, revocable) and users (admin)."""

from __future__ import annotations

from flask_login import current_user
from sqlalchemy import select

from web.api import bp, id_page, json_body
from web.auth import admin_required, create_token
from web.db import db
from web.schemas import new_token_json, token_json, user_json
from web.services import accounts as account_service
from web.validation import json_bool, json_str
from worker.store.models import ApiToken, User


@bp.get("/me")
def me() -> dict:
    return {"id": current_user.id, "email": current_user.email, "role": current_user.role}


@bp.post("/me/password")
def change_password() -> tuple[str, int]:
    """Change your password (``current_password``, ``new_password``); every session of yours ends."""
    data = json_body()
    current = json_str(data, "current_password", max_length=1024) or ""
    new = json_str(data, "new_password", max_length=1024) or ""
    account_service.change_password(db(), current_user.id, current, new)
    return "", 204


@bp.get("/tokens")
def list_tokens() -> dict:
    rows, next_cursor = id_page(db(), select(ApiToken).where(ApiToken.user_id == current_user.id), ApiToken.id)
    return {"items": [token_json(t) for t in rows], "next_cursor": next_cursor}


@bp.post("/tokens")
def post_token() -> tuple[dict, int]:
    session = db()
    name = json_str(json_body(), "name", required=False, max_length=200)
    row, secret = create_token(session, current_user.id, name or None)
    session.commit()
    return new_token_json(row, secret), 201


@bp.delete("/tokens/<int:token_id>")
def revoke_token(token_id: int) -> tuple[str, int]:
    account_service.revoke_token(db(), token_id, user_id=current_user.id, any_user=current_user.is_admin)
    return "", 204


@bp.get("/users")
@admin_required
def list_users() -> dict:
    rows, next_cursor = id_page(db(), select(User), User.id)
    return {"items": [user_json(u) for u in rows], "next_cursor": next_cursor}


@bp.post("/users")
@admin_required
def post_user() -> tuple[dict, int]:
    data = json_body()
    user = account_service.add_user(db(), json_str(data, "email", max_length=320) or "", json_str(data, "password", max_length=1024) or "",
                                    admin=json_bool(data, "admin"))
    return user_json(user), 201
