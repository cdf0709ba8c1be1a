"""Review edits use the row version: a stale edit is refused, concurrent edits of one box have one winner."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.store.bulk import BoxNotFoundError, StaleEditError, insert_boxes, update_box
from worker.store.models import Box, Image


@pytest.fixture
def box_id(session: Session, make_collection, make_images, make_model_version) -> int:  # type: ignore[no-untyped-def]
    coll, cats = make_collection("a")
    (img,) = make_images(coll, 1)
    mv = make_model_version(coll)
    insert_boxes(session, [{"image_id": img, "category_id": cats["cat"], "x1": 1, "y1": 2, "x2": 3, "y2": 4, "score": 0.5, "model_version_id": mv}])
    session.commit()
    return session.execute(select(Box.id)).scalar_one()


def test_edit_bumps_version_and_marks_edited(session: Session, box_id: int) -> None:
    box = update_box(session, box_id, 1, x1=10, y1=20, x2=30, y2=40)
    session.commit()
    assert (box.version, box.status.value, box.x1, box.y2) == (2, "edited", 10.0, 40.0)
    box = update_box(session, box_id, 2, status="rejected")
    session.commit()
    assert (box.version, box.status.value, box.x1) == (3, "rejected", 10.0)
    image = session.get(Image, box.image_id)
    assert image is not None and image.n_boxes == 0 and image.max_score is None  # rejected boxes are not counted


def test_stale_edit_is_refused_and_overwrites_nothing(runtime, box_id: int) -> None:  # type: ignore[no-untyped-def]
    with runtime.sessions() as alice, runtime.sessions() as bob:
        seen_by_alice = alice.get(Box, box_id)
        seen_by_bob = bob.get(Box, box_id)
        assert seen_by_alice.version == seen_by_bob.version == 1

        update_box(bob, box_id, seen_by_bob.version, status="accepted")
        bob.commit()

        with pytest.raises(StaleEditError) as info:
            update_box(alice, box_id, seen_by_alice.version, x1=0, y1=0, x2=5, y2=5)
        alice.rollback()
        assert (info.value.expected_version, info.value.current_version) == (1, 2)

    with runtime.sessions() as check:
        box = check.get(Box, box_id)
        assert (box.version, box.status.value, box.x1, box.x2) == (2, "accepted", 1.0, 3.0)


def test_bad_edits_are_refused(session: Session, box_id: int, make_collection) -> None:  # type: ignore[no-untyped-def]
    _, foreign = make_collection("other")
    with pytest.raises(BoxNotFoundError):
        update_box(session, 999_999, 1, status="accepted")
    with pytest.raises(ValueError, match="all of x1, y1, x2, y2"):
        update_box(session, box_id, 1, x1=5)
    with pytest.raises(ValueError, match="x1 <= x2"):
        update_box(session, box_id, 1, x1=50, y1=0, x2=5, y2=5)
    with pytest.raises(ValueError, match="cannot edit"):
        update_box(session, box_id, 1, image_id=3)
    with pytest.raises(ValueError, match="not a category of collection"):
        update_box(session, box_id, 1, category_id=foreign["cat"])
    with pytest.raises(ValueError):
        update_box(session, box_id, 1, status="maybe")
    session.rollback()
    assert session.get(Box, box_id).version == 1


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_edits_of_one_box_have_exactly_one_winner(runtime, box_id: int, round_: int) -> None:  # type: ignore[no-untyped-def]
    """Two threads, two sessions, both read version 1 then edit at the same moment."""
    barrier = threading.Barrier(2, timeout=30)
    outcomes: dict[str, str] = {}

    def edit(name: str, x2: float) -> None:
        with runtime.sessions() as session:
            try:
                version = session.get(Box, box_id).version
                session.commit()
                barrier.wait()
                update_box(session, box_id, version, x1=0, y1=0, x2=x2, y2=x2)
                session.commit()
                outcomes[name] = "won"
            except StaleEditError:
                session.rollback()
                outcomes[name] = "stale"
            except Exception as exc:  # noqa: BLE001 - reported to the main thread and failed there
                session.rollback()
                outcomes[name] = f"error: {exc!r}"

    threads = [threading.Thread(target=edit, args=(name, x2)) for name, x2 in (("a", 11.0), ("b", 22.0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes.values()) == ["stale", "won"], outcomes
    winner = next(name for name, outcome in outcomes.items() if outcome == "won")
    with runtime.sessions() as check:
        box = check.get(Box, box_id)
        assert box.version == 2
        assert box.x2 == {"a": 11.0, "b": 22.0}[winner]
