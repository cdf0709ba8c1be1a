"""Row factories for store tests (real databases come from the ``runtime`` fixture)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from worker.store.bulk import insert_images
from worker.store.collections_repo import get_or_create_categories
from worker.store.models import Collection, ModelVersion


def sha(text: str) -> str:
    """A deterministic, valid sha256 hex digest for fake image content."""
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def session(runtime) -> Session:  # type: ignore[no-untyped-def]
    with runtime.sessions() as s:
        yield s


@pytest.fixture
def make_collection(session: Session) -> Callable[..., tuple[int, dict[str, int]]]:
    """``make_collection(name, categories=("cat", "dog"))`` -> (collection id, {name: category id})."""

    def make(name: str, categories: tuple[str, ...] = ("cat", "dog")) -> tuple[int, dict[str, int]]:
        collection = Collection(name=name)
        session.add(collection)
        session.flush()
        cats = get_or_create_categories(session, collection.id, list(categories))
        session.commit()
        return collection.id, cats

    return make


@pytest.fixture
def make_images(session: Session) -> Callable[..., list[int]]:
    """``make_images(collection_id, n, prefix)`` -> ids of ``n`` committed images."""

    def make(collection_id: int, n: int, prefix: str = "img", **extra: Any) -> list[int]:
        rows = [{"collection_id": collection_id, "sha256": sha(f"{prefix}-{i}"), "rel_path": f"{prefix}/{i}.jpg", "width": 640, "height": 480, **extra}
                for i in range(n)]
        ids = insert_images(session, rows)
        session.commit()
        return ids

    return make


@pytest.fixture
def make_model_version(session: Session) -> Callable[..., int]:
    def make(collection_id: int | None, name: str = "mv", checkpoint_key: str | None = None) -> int:
        mv = ModelVersion(collection_id=collection_id, name=name, arch="tiny", spec={"arch": "tiny"}, class_names=["cat", "dog"], checkpoint_key=checkpoint_key)
        session.add(mv)
        session.commit()
        return mv.id

    return make
