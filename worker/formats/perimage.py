"""YOLO (Ultralytics layout) and Pascal VOC exports: one label file per image, plus the images.

Both stream the images left-joined with their boxes, so each image is handled once and
memory stays flat apart from the set of file names already used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from xml.sax.saxutils import escape

import yaml
from sqlalchemy.orm import Session

from worker.formats.selection import CategoryMap, clip_xyxy, images_with_boxes_stmt, stream
from worker.formats.sink import ExportSink, flat_name, stem_of
from worker.store.blobs import LocalBlobStore


@dataclass
class ExportImage:
    """One image with its selected boxes (xyxy pixels, clipped) as category row ids."""

    image_id: int
    rel_path: str
    width: int
    height: int
    storage_key: str | None
    boxes: list[tuple[int, float, float, float, float, float]] = field(default_factory=list)  # (category id, x1, y1, x2, y2, score)


def iter_images(session: Session, collection_id: int, selection: str, counts: dict[str, int], *, model_version_id: int | None = None) -> Iterator[ExportImage]:
    """Usable images in id order, each with its selected boxes (degenerate boxes counted, dropped)."""
    current: ExportImage | None = None
    for row in stream(session, images_with_boxes_stmt(collection_id, selection, model_version_id=model_version_id)):
        image_id, rel_path, width, height, key, box_id, category_id, x1, y1, x2, y2, score, _source, _status = row
        if current is None or current.image_id != image_id:
            if current is not None:
                yield current
            current = ExportImage(image_id, rel_path, int(width or 0), int(height or 0), key)
        if box_id is None:
            continue
        clipped = clip_xyxy(x1, y1, x2, y2, width, height)
        if clipped is None:
            counts["skipped_boxes"] += 1
            continue
        current.boxes.append((category_id, *clipped, 1.0 if score is None else float(score)))
    if current is not None:
        yield current


def _add_image(sink: ExportSink, blobs: LocalBlobStore, arcname: str, image: ExportImage, counts: dict[str, int]) -> None:
    if image.storage_key and blobs.exists(image.storage_key):
        sink.add_file(arcname, blobs.local_path(image.storage_key))
        counts["image_files"] += 1
    else:
        counts["missing_image_files"] += 1


def write_yolo(session: Session, blobs: LocalBlobStore, collection_id: int, categories: CategoryMap, selection: str, sink: ExportSink, *, model_version_id: int | None = None) -> dict[str, int]:
    """``images/<flat name>``, ``labels/<flat stem>.txt`` (``cls cx cy w h`` normalised to 0..1,
    one line per box, empty for images without boxes), ``data.yaml`` with the class names."""
    counts = {"images": 0, "annotations": 0, "skipped_boxes": 0, "image_files": 0, "missing_image_files": 0}
    class_of = {cid: rank for rank, cid in enumerate(categories.ids)}
    taken: set[str] = set()
    for image in iter_images(session, collection_id, selection, counts, model_version_id=model_version_id):
        name = flat_name(image.rel_path, taken)
        stem = stem_of(name)
        lines = []
        if image.width > 0 and image.height > 0:
            for category_id, x1, y1, x2, y2, _score in image.boxes:
                cls = class_of.get(category_id)
                if cls is None:
                    counts["skipped_boxes"] += 1
                    continue
                cx, cy = (x1 + x2) / 2 / image.width, (y1 + y2) / 2 / image.height
                w, h = (x2 - x1) / image.width, (y2 - y1) / image.height
                lines.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        else:
            counts["skipped_boxes"] += len(image.boxes)
        sink.write_text(f"labels/{stem}.txt", "".join(lines))
        _add_image(sink, blobs, f"images/{name}", image, counts)
        counts["images"] += 1
        counts["annotations"] += len(lines)
    data = {"path": ".", "train": "images", "val": "images", "nc": len(categories.names), "names": {i: n for i, n in enumerate(categories.names)}}
    sink.write_text("data.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return counts


def voc_xml(image: ExportImage, filename: str, names: dict[int, str]) -> str:
    """Pascal VOC XML of one image (pixel ``bndbox``; ``path`` is the image's relative path)."""
    folder = str(PurePosixPath(image.rel_path).parent)
    parts = [
        "<annotation>\n",
        f"\t<folder>{escape(folder)}</folder>\n",
        f"\t<filename>{escape(filename)}</filename>\n",
        f"\t<path>{escape(image.rel_path)}</path>\n",
        "\t<source><database>camlabel</database></source>\n",
        f"\t<size><width>{image.width}</width><height>{image.height}</height><depth>3</depth></size>\n",
        "\t<segmented>0</segmented>\n",
    ]
    for category_id, x1, y1, x2, y2, score in image.boxes:
        name = names.get(category_id)
        if name is None:
            continue
        parts.append(
            f"\t<object><name>{escape(name)}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
            f"<score>{score:.5f}</score>"
            f"<bndbox><xmin>{x1:.2f}</xmin><ymin>{y1:.2f}</ymin><xmax>{x2:.2f}</xmax><ymax>{y2:.2f}</ymax></bndbox></object>\n"
        )
    parts.append("</annotation>\n")
    return "".join(parts)


def write_voc(session: Session, blobs: LocalBlobStore, collection_id: int, categories: CategoryMap, selection: str, sink: ExportSink, *, model_version_id: int | None = None) -> dict[str, int]:
    """``Annotations/<flat stem>.xml`` and ``JPEGImages/<flat name>`` plus ``labels.txt``."""
    counts = {"images": 0, "annotations": 0, "skipped_boxes": 0, "image_files": 0, "missing_image_files": 0}
    names = dict(zip(categories.ids, categories.names))
    taken: set[str] = set()
    for image in iter_images(session, collection_id, selection, counts, model_version_id=model_version_id):
        name = flat_name(image.rel_path, taken)
        stem = stem_of(name)
        sink.write_text(f"Annotations/{stem}.xml", voc_xml(image, name, names))
        _add_image(sink, blobs, f"JPEGImages/{name}", image, counts)
        counts["images"] += 1
        counts["annotations"] += sum(1 for b in image.boxes if b[0] in names)
    sink.write_text("labels.txt", "".join(f"{n}\n" for n in categories.names))
    return counts
