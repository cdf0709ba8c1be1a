"""COCO detection JSON and COCO results, written incrementally (constant memory).

``bbox`` is ``[x, y, width, height]`` in absolute pixels of the displayed image, clipped inside
it; annotation ids are the box row ids (unique, non-zero, stable); image ids the image row ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.orm import Session

from worker.formats.selection import CategoryMap, boxes_stmt, images_stmt, stream

_BUFFER = 1 << 20


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_quote = encode_basestring  # JSON string literal (C implementation), for hot loops


def _write_array(fh: TextIO, items: Iterable[str | None], counts: dict[str, int], key: str) -> None:
    """Write the non-``None`` ``items`` comma-separated, in large writes; count them under ``key``
    and the ``None`` ones under ``skipped_boxes``."""
    iterator = iter(items)
    first = True
    while chunk := list(islice(iterator, 4096)):
        good = [t for t in chunk if t is not None]
        counts["skipped_boxes"] = counts.get("skipped_boxes", 0) + len(chunk) - len(good)
        if good:
            fh.write(("" if first else ",") + ",".join(good))
            first = False
            counts[key] += len(good)


def _annotations(session: Session, collection_id: int, selection: str, coco_ids: dict[int, int], model_version_id: int | None,
                 with_meta: bool, reviewed_only: bool) -> Iterator[str | None]:
    """Yield the JSON text of every selected box, clipped inside its image; ``None`` for a box
    left out (degenerate after clipping, or of a category not in the collection)."""
    for box_id, category_id, x1, y1, x2, y2, score, source, status, image_id, width, height in stream(
        session, boxes_stmt(collection_id, selection, model_version_id=model_version_id, reviewed_only=reviewed_only)
    ):
        coco_id = coco_ids.get(category_id)
        # clip inline (hot loop): same rule as selection.clip_xyxy
        if x2 < x1:
            x1, x2 = x2, x1
        if y2 < y1:
            y1, y2 = y2, y1
        if x1 < 0.0:
            x1 = 0.0
        if y1 < 0.0:
            y1 = 0.0
        if width and x2 > width:
            x2 = float(width)
        if height and y2 > height:
            y2 = float(height)
        w, h = x2 - x1, y2 - y1
        if coco_id is None or w <= 0 or h <= 0:
            yield None
            continue
        s = 1.0 if score is None else score
        if with_meta:
            yield (
                f'{{"id":{box_id},"image_id":{image_id},"category_id":{coco_id},'
                f'"bbox":[{x1:.2f},{y1:.2f},{w:.2f},{h:.2f}],"area":{w * h:.2f},"iscrowd":0,'
                f'"score":{s:.5f},"source":"{source}","status":"{status}"}}'
            )
        else:
            yield f'{{"image_id":{image_id},"category_id":{coco_id},"bbox":[{x1:.2f},{y1:.2f},{w:.2f},{h:.2f}],"score":{s:.5f}}}'


def write_coco(
    session: Session,
    collection_id: int,
    categories: CategoryMap,
    selection: str,
    out_path: Path,
    info: dict[str, Any],
    *,
    model_version_id: int | None = None,
    reviewed_only: bool = False,
) -> dict[str, int]:
    """Write a COCO detection file; returns ``{"images", "annotations", "skipped_boxes"}``.

    With ``reviewed_only`` only images a person reviewed (and their boxes) are written."""
    counts = {"images": 0, "annotations": 0, "skipped_boxes": 0}
    coco_ids = categories.coco_id
    with out_path.open("w", encoding="utf-8", buffering=_BUFFER) as fh:
        fh.write('{"info":' + _dump(info) + ',"licenses":[],"categories":' + _dump(categories.coco_categories()) + ',"images":[')
        images = (
            f'{{"id":{image_id},"file_name":{_quote(rel_path)},"width":{width or 0},"height":{height or 0}}}'
            for image_id, rel_path, width, height, _key in stream(session, images_stmt(collection_id, reviewed_only=reviewed_only))
        )
        _write_array(fh, images, counts, "images")
        fh.write('],"annotations":[')
        annotations = _annotations(session, collection_id, selection, coco_ids, model_version_id, with_meta=True, reviewed_only=reviewed_only)
        _write_array(fh, annotations, counts, "annotations")
        fh.write("]}\n")
    return counts


def write_coco_results(
    session: Session, collection_id: int, categories: CategoryMap, selection: str, out_path: Path, *, model_version_id: int | None = None,
    reviewed_only: bool = False,
) -> dict[str, int]:
    """Write a flat COCO results list ``[{image_id, category_id, bbox, score}]``."""
    counts = {"annotations": 0, "skipped_boxes": 0}
    with out_path.open("w", encoding="utf-8", buffering=_BUFFER) as fh:
        fh.write("[")
        annotations = _annotations(session, collection_id, selection, categories.coco_id, model_version_id, with_meta=False, reviewed_only=reviewed_only)
        _write_array(fh, annotations, counts, "annotations")
        fh.write("]\n")
    return counts
