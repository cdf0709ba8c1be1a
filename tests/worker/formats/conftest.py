"""Format test fixtures: a row factory on the test's runtime and the standard scene (:mod:`tests.worker.formats.scene`)."""

from __future__ import annotations

import pytest

from tests.worker.formats.scene import BOXES, IMAGES, Built, Factory


@pytest.fixture
def factory(runtime) -> Factory:  # type: ignore[no-untyped-def]
    return Factory(runtime)


@pytest.fixture
def sqlite_factory(sqlite_runtime) -> Factory:  # type: ignore[no-untyped-def]
    return Factory(sqlite_runtime)


@pytest.fixture
def scene(factory: Factory) -> Built:
    """The standard scene. Reviewed: c1, c2, d1 (boxes a person decided on) and empty.jpg (marked
    "no objects"); d2 holds only a proposal and ground truth, so nobody reviewed it."""
    built = factory.collection("scene", ["cat", "dog"], IMAGES, failed={"dogs/images/broken.jpg": "truncated JPEG"})
    factory.boxes(built, BOXES)
    factory.no_objects(built, "dogs/images/empty.jpg")
    return built
