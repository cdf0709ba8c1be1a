"""Response headers that keep uploaded content inert: nosniff, a strict Content-Security-Policy
(scripts only from this origin, no inline script), no framing."""

from __future__ import annotations

from flask import Flask, Response

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)

# Content types by blob-key suffix (the suffix is part of the validated key). Anything else is
# served as an octet-stream attachment, so no stored file is ever rendered as HTML or script.
CONTENT_TYPES: dict[str, str] = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif",
    ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff",
}
DOWNLOAD_TYPES: dict[str, str] = {".json": "application/json", ".zip": "application/zip", ".csv": "text/csv", ".txt": "text/plain"}


def init_app(app: Flask) -> None:
    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        return response
