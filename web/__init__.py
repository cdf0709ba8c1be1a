"""camlabel web: Flask dashboard, review tool, REST API and the CLI. Imports worker and camcore."""

from __future__ import annotations

from typing import Any

from flask import Flask


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Application factory: defaults, then the environment, then ``test_config``; then blueprints."""
    app = Flask(__name__)
    app.config.from_mapping(test_config or {})
    return app
