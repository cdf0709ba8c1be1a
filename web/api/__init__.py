"""The JSON API under ``/api/v1``: every route needs a session login or a bearer token (401 JSON
otherwise); lists are keyset-paginated (``limit`` + opaque ``cursor``, answered ``next_cursor``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge

from web.errors import ApiError
from web.validation import int_arg

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.before_request
def _require_login() -> None:
    if request.endpoint == "api.openapi":
        return
    if not current_user.is_authenticated:
        raise ApiError(401, "unauthorized", "log in or send 'Authorization: Bearer <token>'")


def page_limit(default: int = 50) -> int:
    """``limit`` query argument, 1..API_MAX_LIMIT."""
    maximum = int(current_app.config["API_MAX_LIMIT"])
    limit = int_arg(request.args, "limit", minimum=1, maximum=maximum)
    return default if limit is None else limit


def int_cursor() -> int | None:
    """``cursor`` query argument of id-keyed lists (the last id seen), or ``None``."""
    return int_arg(request.args, "cursor")


def id_page(session: Any, stmt: Any, id_column: Any, *, newest_first: bool = False, default_limit: int = 50) -> tuple[list[Any], str | None]:
    """One keyset page of ``stmt`` ordered by ``id_column``: ``(rows, next_cursor)``.

    ``limit`` and ``cursor`` (the last id seen) come from the query string; ``next_cursor`` is
    ``None`` on the last page. ``newest_first`` pages by descending id.
    """
    limit = page_limit(default_limit)
    stmt = stmt.order_by(id_column.desc() if newest_first else id_column).limit(limit + 1)
    after = int_cursor()
    if after is not None:
        stmt = stmt.where(id_column < after if newest_first else id_column > after)
    rows = list(session.scalars(stmt))
    if len(rows) > limit:
        return rows[:limit], str(rows[limit - 1].id)
    return rows, None


def json_body() -> dict:
    """The request's JSON object (400 unless the body is one; 413 when a body without a length
    reached the route's limit, see :mod:`web.limits`)."""
    limit = request.max_content_length
    if not request.content_length and limit is not None and len(request.get_data(cache=True)) >= limit:
        raise RequestEntityTooLarge()
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "send a JSON object body with Content-Type: application/json")
    return data


from web.api import accounts, collections, jobs, no_objects, openapi, review, triage  # noqa: E402,F401  (registers routes)
