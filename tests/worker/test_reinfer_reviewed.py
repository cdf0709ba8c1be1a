"""Re-running inference keeps reviewed boxes and never proposes a duplicate of one."""

from __future__ import annotations

from pathlib import Path

import torch
from sqlalchemy import select
from torchvision.ops import box_iou

from worker.store.models import Box, BoxSource, ReviewStatus


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return float(box_iou(torch.tensor([a]), torch.tensor([b]))[0, 0])


def _boxes(sqlite_runtime) -> list[Box]:  # type: ignore[no-untyped-def]
    with sqlite_runtime.sessions() as session:
        rows = session.scalars(select(Box).where(Box.source == BoxSource.cam).order_by(Box.id)).all()
        for row in rows:
            session.expunge(row)
        return list(rows)


def test_reinfer_with_the_same_model_proposes_no_duplicate_of_an_accepted_box(run, photos: Path, sqlite_runtime) -> None:  # type: ignore[no-untyped-def]
    run("collections", "create", "rk")
    run("import", "rk", str(photos))
    run("train", "rk", "--arch", "tiny_cnn", "--input-size", "96", "--epochs", "10", "--wait")
    run("infer", "rk", "--wait")
    first = _boxes(sqlite_runtime)
    accepted = first[0]
    with sqlite_runtime.sessions() as session:
        box = session.get(Box, accepted.id)
        box.status = ReviewStatus.accepted
        session.commit()

    run("infer", "rk", "--model", str(accepted.model_version_id), "--wait")
    second = _boxes(sqlite_runtime)
    kept = [b for b in second if b.id == accepted.id]
    assert len(kept) == 1 and kept[0].status is ReviewStatus.accepted
    assert (kept[0].x1, kept[0].y1, kept[0].x2, kept[0].y2) == (accepted.x1, accepted.y1, accepted.x2, accepted.y2)
    same_place = [b for b in second if b.id != accepted.id and b.image_id == accepted.image_id and b.category_id == accepted.category_id
                  and _iou((b.x1, b.y1, b.x2, b.y2), (accepted.x1, accepted.y1, accepted.x2, accepted.y2)) >= 0.5]
    assert same_place == []
    # every other image keeps its full set of proposals
    others = lambda boxes: sorted((b.image_id, b.category_id, round(b.x1, 3), round(b.y1, 3)) for b in boxes  # noqa: E731
                                  if b.image_id != accepted.image_id)
    assert others(second) == others(first)
