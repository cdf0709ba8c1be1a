"""Response headers that keep uploaded content inert: nosniff, a strict Content-Security-Policy
(scripts only from this origin, no inline script), no framing; and HTTPS behind a proxy.

Behind a reverse proxy that terminates TLS, set ``CAMLABEL_PROXY_FIX`` to the number of proxies in
front of the app (usually 1): ``X-Forwarded-For/-Proto/-Host/-Port`` from that many hops are then
trusted (Werkzeug's ``ProxyFix``), so ``request.is_secure`` and the client address are right. The
session cookie is ``Secure`` whenever the request came over HTTPS, or always with
``CAMLABEL_SESSION_COOKIE_SECURE=true``.
"""

from __future__ import annotations

from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

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


class HttpsAwareSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the ``Secure`` flag on every HTTPS response."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(super().get_cookie_secure(app)) or request.is_secure


def configure_https(app: Flask) -> None:
    """``ProxyFix`` for ``PROXY_FIX`` hops, and ``Secure`` session cookies over HTTPS."""
    hops = app.config.get("PROXY_FIX") or 0
    try:
        hops = int(hops)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"CAMLABEL_PROXY_FIX must be the number of proxies in front of the app, not {hops!r}") from exc
    if hops < 0:
        raise ValueError(f"CAMLABEL_PROXY_FIX must be 0 or more, not {hops}")
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)  # type: ignore[method-assign]  # Flask's documented way to add WSGI middleware
    app.session_interface = HttpsAwareSessionInterface()
    if app.config.get("SESSION_COOKIE_SECURE"):
        app.config["REMEMBER_COOKIE_SECURE"] = True


def init_app(app: Flask) -> None:
    configure_https(app)

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        return response
