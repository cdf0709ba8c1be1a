"""Configuration read from the environment.

``CAMLABEL_DATA_DIR`` (default ``./instance``) holds images, maps and checkpoints;
``DATABASE_URL`` defaults to a SQLite file in it; ``REDIS_URL`` absent means the
embedded in-process worker (Celery memory transport).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one process.

    Attributes:
        data_dir: absolute directory for blobs (images, thumbnails, maps, checkpoints).
        database_url: SQLAlchemy URL; ``postgresql://`` URLs are used with psycopg 3.
        redis_url: broker and result backend, or ``None`` for the embedded worker.
        extra: free-form overrides (tests), never read from the environment.
    """

    data_dir: Path
    database_url: str
    redis_url: str | None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        """True when no ``REDIS_URL`` is set: jobs run on an in-process worker."""
        return not self.redis_url

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Read settings from ``env`` (default ``os.environ``); keyword overrides win."""
        env = dict(os.environ if env is None else env)
        data_dir = Path(str(overrides.pop("data_dir", None) or env.get("CAMLABEL_DATA_DIR") or "instance")).resolve()
        database_url = str(overrides.pop("database_url", None) or env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'camlabel.db'}")
        redis_url = overrides.pop("redis_url", env.get("REDIS_URL")) or None
        return cls(data_dir=data_dir, database_url=normalise_database_url(database_url), redis_url=str(redis_url) if redis_url else None, extra=dict(overrides))


def normalise_database_url(url: str) -> str:
    """Use the psycopg 3 driver for plain ``postgresql://`` / ``postgres://`` URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url
