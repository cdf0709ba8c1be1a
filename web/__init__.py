"""camlabel web: Flask dashboard, review tool, REST API and the CLI. Imports worker and camcore.

``create_app(test_config)`` follows Flask's tutorial factory: defaults, then the environment
(``CAMLABEL_*`` keys via ``from_prefixed_env`` plus ``DATABASE_URL``/``REDIS_URL``), then
``test_config``; it configures the worker runtime (database, blobs) and registers the
``dashboard``, ``review`` and ``api`` blueprints.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from web.secret import check_secret_key, persistent_secret
from worker.config import Settings
from worker.runtime import configure

DEFAULTS: dict[str, Any] = {
    "MAX_CONTENT_LENGTH": 1024 * 1024 * 1024,  # bytes per upload request; 413 above
    "MAX_BODY_BYTES": 1024 * 1024,  # bytes per request on every other route (JSON bodies, forms); 413 above
    "MAX_FORM_PARTS": 1000,  # files and fields per multipart request (Werkzeug's limit); 413 naming it above
    "PROXY_FIX": 0,  # reverse proxies in front of the app whose X-Forwarded-* headers are trusted
    "SESSION_COOKIE_SECURE": False,  # True: Secure cookies always; HTTPS requests get them anyway
    "LOGIN_MAX_FAILURES_PER_ACCOUNT": 10,  # failed logins per account per LOGIN_WINDOW_S; 429 above
    "LOGIN_MAX_FAILURES_PER_ADDRESS": 50,  # failed logins per client address per LOGIN_WINDOW_S; 429 above
    "LOGIN_WINDOW_S": 900,
    "PAGE_SIZE": 48,  # review grid thumbnails per page
    "API_MAX_LIMIT": 500,  # largest ``limit`` a list endpoint accepts
    "WTF_CSRF_CHECK_DEFAULT": False,  # checked in web.auth for cookie sessions, not for bearer tokens
    "WTF_CSRF_TIME_LIMIT": None,  # token valid for the session's life
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_HTTPONLY": True,
}

_SETTINGS_KEYS = {"DATABASE_URL": "database_url", "REDIS_URL": "redis_url", "CAMLABEL_DATA_DIR": "data_dir"}


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Application factory: defaults, then the environment, then ``test_config``; then blueprints."""
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("CAMLABEL")  # CAMLABEL_SECRET_KEY -> SECRET_KEY, CAMLABEL_MAX_CONTENT_LENGTH, ...
    if test_config:  # a key given as None means "not set here" (the environment or default stays)
        app.config.from_mapping({k: v for k, v in test_config.items() if v is not None})
    if app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = str(app.config["SECRET_KEY"])  # from_prefixed_env JSON-decodes "123" to an int
        check_secret_key(app.config["SECRET_KEY"])  # a weak or placeholder key: refuse to start (WeakSecretError)

    overrides: dict[str, object] = {}
    for key, name in _SETTINGS_KEYS.items():
        if test_config and key in test_config:
            overrides[name] = test_config[key]
    if "redis_url" in overrides and not overrides["redis_url"]:
        overrides["redis_url"] = None
    env = dict(os.environ)
    if "redis_url" in overrides and overrides["redis_url"] is None:
        env.pop("REDIS_URL", None)
    settings = Settings.from_env(env, **overrides)
    runtime = configure(settings)
    app.extensions["camlabel"] = runtime
    from worker.queue.app import configure_celery

    app.extensions["celery"] = configure_celery(settings)  # bound once: Redis broker, or memory + embedded worker
    app.config["DATA_DIR"] = str(settings.data_dir)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = persistent_secret(settings.data_dir)

    from web import auth, errors, limits, security, throttle
    from web.public import public_text
    from web.validation import Int64Converter

    auth.password_hash_method()  # a CAMLABEL_PASSWORD_HASH that is no werkzeug method: refuse to start (ValueError)
    app.url_map.converters["int"] = Int64Converter  # before any route: ids beyond bigint are 404s
    app.jinja_env.filters["public_text"] = lambda value: public_text(value, settings.data_dir)
    throttle.init_app(app, settings.redis_url)
    from web.api import bp as api_bp
    from web.dashboard import bp as dashboard_bp
    from web.review import bp as review_bp

    auth.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    limits.init_app(app)  # first before_request: the body limit is set before anything reads the body
    app.register_blueprint(dashboard_bp)
    app.register_blueprint(review_bp)
    app.register_blueprint(api_bp)

    @app.get("/healthz")
    def healthz() -> tuple[dict[str, str], int]:
        """Liveness and database check; needs no login."""
        from sqlalchemy import text

        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return {"status": "ok"}, 200

    return app
