"""Errors: JSON ``{"error": {"code", "message"}}`` for the API (and JSON clients), an HTML page
otherwise; never a stack trace. The one place that turns the services' errors
(:mod:`web.services.errors`) into HTTP statuses (:data:`HTTP_STATUS`); ``ApiError`` is a view's
own error with an explicit status (401 for a missing login, 400 for a body that is no JSON).

Operational failures get their own status instead of 500: a full disk (``ENOSPC``, ``EDQUOT``) is
507 ``insufficient_storage``, an unreachable database 503 ``database_unavailable``; nothing half
written is kept (the upload's staging folder is removed by its service)."""

from __future__ import annotations

import errno
import logging
import re

from flask import Flask, Response, jsonify, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.wrappers import Response as BaseResponse

from web.services.errors import Conflict, Forbidden, Invalid, NotFound, ServiceError, Unavailable

log = logging.getLogger(__name__)


HTTP_STATUS: dict[type[ServiceError], int] = {Invalid: 400, Forbidden: 403, NotFound: 404, Conflict: 409, Unavailable: 503}


class ApiError(ServiceError):
    """An error answered as ``status`` with ``{"error": {"code": code, "message": message}}``."""

    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(code, message, **extra)
        self.status = status


def http_status(exc: ServiceError) -> int:
    """The HTTP status answering ``exc``: its own for an ``ApiError``, else by its class."""
    if isinstance(exc, ApiError):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 400


def wants_json() -> bool:
    """API paths, bearer clients and fetch() calls get JSON; browsers navigating get a page."""
    if request.path.startswith("/api/") or request.path == "/healthz":
        return True
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and not request.accept_mimetypes["text/html"] >= request.accept_mimetypes["application/json"]


def _code_for(exc: HTTPException) -> str:
    return re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")


def error_response(status: int, code: str, message: str, **extra: object) -> Response:
    if wants_json():
        body: dict[str, object] = {"code": code, "message": message}
        body.update(extra)
        response = jsonify({"error": body})
    else:
        try:
            page = render_template("error.html", status=status, code=code, message=message)
        except Exception:  # the page itself needs what failed (the database for the signed-in user): plain text
            log.warning("error page for %s could not be rendered", code, exc_info=True)
            page = f"{status} {code}: {message}"
            return Response(page, status=status, mimetype="text/plain")
        response = Response(page, mimetype="text/html")
    response.status_code = status
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        return error_response(http_status(exc), exc.code, exc.message, **exc.extra)

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError) -> Response:
        return error_response(400, "csrf_failed", f"CSRF check failed: {exc.description} Reload the page and try again.")

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response:
        from web.limits import too_large_message

        return error_response(413, "too_large", too_large_message(request.max_content_length))

    @app.errorhandler(OSError)
    def _os_error(exc: OSError) -> Response:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("storage full on %s %s: %s", request.method, request.path, exc)
            return error_response(507, "insufficient_storage", "the server's storage is full, so nothing was saved; "
                                  "ask the operator to free disk space, then try again")
        return _unexpected(exc)

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeoutError)
    def _database_down(exc: Exception) -> Response:
        log.error("database unavailable on %s %s: %s", request.method, request.path, exc)
        response = error_response(503, "database_unavailable", "the database is unavailable, so nothing was saved; try again in a minute")
        response.headers["Retry-After"] = "30"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> BaseResponse:
        if exc.code == 401 and not wants_json():
            return redirect(url_for("dashboard.login", next=request.full_path if request.query_string else request.path))
        response = error_response(exc.code or 500, _code_for(exc), exc.description or exc.name)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        return error_response(500, "internal_error", "an internal error occurred; it has been logged")

