"""The process-wide runtime: settings, database engine, session factory and blob store.

``configure(settings)`` is called once per process (by ``web.create_app`` or the worker
entry point); tasks and CLI commands call :func:`get_runtime`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.store.blobs import LocalBlobStore
from worker.store.db import make_engine, make_session_factory


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: LocalBlobStore

    def dispose(self) -> None:
        self.engine.dispose()


_lock = threading.Lock()
_runtime: Runtime | None = None


def configure(settings: Settings | None = None) -> Runtime:
    """(Re)build the runtime from ``settings`` (default: the environment) and make it current."""
    global _runtime
    settings = settings or Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    runtime = Runtime(settings=settings, engine=engine, sessions=make_session_factory(engine), blobs=LocalBlobStore(settings.data_dir / "blobs"))
    with _lock:
        previous, _runtime = _runtime, runtime
    if previous is not None and previous.engine is not engine:
        previous.dispose()
    return runtime


def get_runtime() -> Runtime:
    """The current runtime, configured from the environment on first use."""
    if _runtime is None:
        return configure()
    return _runtime
