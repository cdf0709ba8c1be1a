"""Request body limits per route: uploads may send up to ``MAX_CONTENT_LENGTH`` (1 GiB), every
other route ``MAX_BODY_BYTES`` (1 MiB: JSON bodies and small forms).

The limit is set on the request before anything reads the body (CSRF checks read forms), so a
body declared larger is refused with 413 at once and a chunked body is cut off at the limit: a
200 MB JSON body to ``POST /api/v1/tokens`` is never buffered. Views that take uploads are marked
with :func:`large_body`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Request, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

F = TypeVar("F", bound=Callable[..., Any])
_LARGE_BODY = "_camlabel_large_body"


def large_body(view: F) -> F:
    """Mark ``view`` as an upload: its body may be as large as ``MAX_CONTENT_LENGTH``."""
    setattr(view, _LARGE_BODY, True)
    return view


def body_limit() -> int | None:
    """Bytes the current request's body may have (``None``: no limit)."""
    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and getattr(view, _LARGE_BODY, False):
        return current_app.config.get("MAX_CONTENT_LENGTH")
    return int(current_app.config["MAX_BODY_BYTES"])


def too_large_message(limit: int | None) -> str:
    """What a 413 says: the byte limit, or (a multipart body within it) the form-parts limit."""
    length = request.content_length
    if limit is not None and length is not None and length <= limit and request.mimetype == "multipart/form-data":
        parts = int(current_app.config.get("MAX_FORM_PARTS") or 1000)
        return (f"the upload has too many parts: one request takes at most {parts} files and form fields together; "
                "upload the files in batches, or as one .zip")
    if limit is None:
        return "the request body is too large"
    if view_is_upload():
        return f"the upload is larger than the limit of {_size(limit)}; split it into smaller uploads"
    return f"the request body is larger than the limit of {_size(limit)} for this route"


def view_is_upload() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return bool(view is not None and getattr(view, _LARGE_BODY, False))


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


class ClosingRequest(Request):
    """Flask's request that closes every spooled upload file when it ends, also those of a form
    whose parsing stopped half-way (a 413 for too many parts leaves Werkzeug's files unclosed)."""

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None, filename: str | None = None,
                         content_length: int | None = None) -> Any:
        stream = super()._get_file_stream(total_content_length, content_type, filename, content_length)
        self.__dict__.setdefault("_spooled_files", []).append(stream)
        return stream

    def close(self) -> None:
        try:
            super().close()
        finally:
            for stream in self.__dict__.pop("_spooled_files", []):
                stream.close()


def init_app(app: Flask) -> None:
    """Use :class:`ClosingRequest` and register the limit check first among the app's
    ``before_request`` functions."""
    app.request_class = ClosingRequest

    def _limit_body() -> None:
        limit = body_limit()
        request.max_content_length = limit
        if limit is not None and request.content_length is not None and request.content_length > limit:
            raise RequestEntityTooLarge()

    app.before_request_funcs.setdefault(None, []).insert(0, _limit_body)
