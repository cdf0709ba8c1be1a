"""YOLO (Ultralytics layout) and Pascal VOC exports: one label file per image, plus the images.

Both stream the images left-joined with their boxes, so each image is handled once and
memory stays flat apart from the set of file names already used.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import yaml
from sqlalchemy.orm import Session

from worker.formats.selection import CategoryMap, FormatError, clip_xyxy, images_stmt, images_with_boxes_stmt, stream
from worker.formats.sink import ExportSink, flat_name, stem_of
from worker.formats.upright import jpeg_bytes, upright_bytes
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


def iter_images(
    session: Session, collection_id: int, selection: str, counts: dict[str, int], *, model_version_id: int | None = None, reviewed_only: bool = False
) -> Iterator[ExportImage]:
    """Usable images in id order, each with its selected boxes (degenerate boxes counted, dropped)."""
    current: ExportImage | None = None
    stmt = images_with_boxes_stmt(collection_id, selection, model_version_id=model_version_id, reviewed_only=reviewed_only)
    for row in stream(session, stmt):
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


@dataclass(frozen=True)
class Split:
    """Which exported images are held out for validation (a seeded draw of ``fraction``)."""

    fraction: float
    seed: int
    val_ids: frozenset[int]

    @property
    def enabled(self) -> bool:
        return self.fraction > 0

    def subset(self, image_id: int) -> str:
        return "val" if image_id in self.val_ids else "train"


def choose_split(session: Session, collection_id: int, *, fraction: float, seed: int, reviewed_only: bool) -> Split:
    """Draw ``round(fraction * N)`` of the ``N`` exported images for validation (at least one,
    and at least one left to train on, when ``fraction > 0`` and ``N >= 2``).

    The draw depends only on ``seed`` and the set of image ids, so exporting again gives the
    same split."""
    if not 0 <= fraction < 1:
        raise FormatError(f"val_fraction must be in [0, 1), got {fraction!r}")
    if fraction == 0:
        return Split(0.0, seed, frozenset())
    ids = [row[0] for row in stream(session, images_stmt(collection_id, reviewed_only=reviewed_only))]
    if len(ids) < 2:
        return Split(fraction, seed, frozenset())
    n_val = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    return Split(fraction, seed, frozenset(random.Random(seed).sample(ids, n_val)))


def _add_image(sink: ExportSink, blobs: LocalBlobStore, arcname: str, image: ExportImage, counts: dict[str, int], *, as_jpeg: bool = False) -> None:
    """The image file, upright (:mod:`worker.formats.upright`): re-encoded when EXIF-rotated, or
    (``as_jpeg``) when it is not a JPEG; otherwise the stored file itself."""
    if not (image.storage_key and blobs.exists(image.storage_key)):
        counts["missing_image_files"] += 1
        return
    source = blobs.local_path(image.storage_key)
    encoded = jpeg_bytes(source) if as_jpeg else upright_bytes(source)
    if encoded is None:
        sink.add_file(arcname, source)
    else:
        sink.write_bytes(arcname, encoded)
        counts["images_reencoded"] += 1
    counts["image_files"] += 1


def _counts() -> dict[str, int]:
    return {"images": 0, "annotations": 0, "skipped_boxes": 0, "image_files": 0, "missing_image_files": 0, "images_reencoded": 0,
            "train_images": 0, "val_images": 0}


YOLO_YAML_NOTE = (
    "# camlabel YOLO export. No 'path' key: Ultralytics then resolves train/val against this\n"
    "# file's folder, wherever the dataset is unpacked (a relative 'path' would be taken from the\n"
    "# working directory).\n"
)
YOLO_NO_SPLIT_NOTE = "# val is the training images here: export with a validation share (val_fraction) to hold some out.\n"


def write_yolo(
    session: Session, blobs: LocalBlobStore, collection_id: int, categories: CategoryMap, selection: str, sink: ExportSink, *,
    model_version_id: int | None = None, reviewed_only: bool = False, split: Split | None = None,
) -> dict[str, int]:
    """Ultralytics layout: ``images/<subset>/<flat name>``, ``labels/<subset>/<flat stem>.txt``
    (``cls cx cy w h`` normalised to 0..1, one line per box, empty for an image with no boxes),
    and ``data.yaml`` (class names; ``train``/``val`` relative to the yaml's folder).

    ``<subset>`` is ``train``/``val`` with a split, and absent without one (``val`` is then the
    training images, as Ultralytics requires a ``val`` entry)."""
    split = split or Split(0.0, 0, frozenset())
    counts = _counts()
    class_of = {cid: rank for rank, cid in enumerate(categories.ids)}
    taken: set[str] = set()
    for image in iter_images(session, collection_id, selection, counts, model_version_id=model_version_id, reviewed_only=reviewed_only):
        name = flat_name(image.rel_path, taken)
        stem = stem_of(name)
        sub = f"{split.subset(image.image_id)}/" if split.enabled else ""
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
        sink.write_text(f"labels/{sub}{stem}.txt", "".join(lines))
        _add_image(sink, blobs, f"images/{sub}{name}", image, counts)
        counts["images"] += 1
        counts["val_images" if sub == "val/" else "train_images"] += 1
        counts["annotations"] += len(lines)
    train, val = ("images/train", "images/val") if split.enabled else ("images", "images")
    data = {"train": train, "val": val, "nc": len(categories.names), "names": {i: n for i, n in enumerate(categories.names)}}
    note = YOLO_YAML_NOTE if split.enabled else YOLO_YAML_NOTE + YOLO_NO_SPLIT_NOTE
    sink.write_text("data.yaml", note + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return counts


VOC_DATABASE = "camlabel"


def voc_bndbox(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer VOC ``(xmin, ymin, xmax, ymax)`` of an xyxy pixel box: rounded, inside
    ``1..width`` / ``1..height`` (VOC pixel indices start at 1, so readers that subtract 1
    never see -1) and at least one pixel wide and high."""
    xmin = min(max(1, round(x1)), max(1, width - 1))
    ymin = min(max(1, round(y1)), max(1, height - 1))
    xmax = max(xmin + 1, min(width, round(x2)))
    ymax = max(ymin + 1, min(height, round(y2)))
    return xmin, ymin, xmax, ymax


def voc_xml(image: ExportImage, filename: str, names: dict[int, str]) -> str:
    """Pascal VOC XML of one image: ``<folder>JPEGImages</folder>`` and ``<filename>`` name the
    exported file, ``<path>`` the image's path in the collection; integer pixel ``bndbox``."""
    parts = [
        "<annotation>\n",
        "\t<folder>JPEGImages</folder>\n",
        f"\t<filename>{escape(filename)}</filename>\n",
        f"\t<path>{escape(image.rel_path)}</path>\n",
        f"\t<source><database>{VOC_DATABASE}</database></source>\n",
        f"\t<size><width>{image.width}</width><height>{image.height}</height><depth>3</depth></size>\n",
        "\t<segmented>0</segmented>\n",
    ]
    for category_id, x1, y1, x2, y2, score in image.boxes:
        name = names.get(category_id)
        if name is None:
            continue
        xmin, ymin, xmax, ymax = voc_bndbox(x1, y1, x2, y2, image.width, image.height)
        parts.append(
            f"\t<object><name>{escape(name)}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
            f"<score>{score:.5f}</score>"
            f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>\n"
        )
    parts.append("</annotation>\n")
    return "".join(parts)


def write_voc(
    session: Session, blobs: LocalBlobStore, collection_id: int, categories: CategoryMap, selection: str, sink: ExportSink, *,
    model_version_id: int | None = None, reviewed_only: bool = False, split: Split | None = None,
) -> dict[str, int]:
    """Pascal VOC layout: ``Annotations/<flat stem>.xml``, ``JPEGImages/<flat stem>.jpg`` (other
    formats are converted to JPEG, as VOC readers open ``<id>.jpg``),
    ``ImageSets/Main/{train,val,trainval}.txt`` (one stem a line; without a split every image
    is in ``train`` and ``val`` is empty) and ``labels.txt`` (class names)."""
    split = split or Split(0.0, 0, frozenset())
    counts = _counts()
    names = dict(zip(categories.ids, categories.names, strict=True))
    taken: set[str] = set()
    subsets: dict[str, list[str]] = {"train": [], "val": []}
    for image in iter_images(session, collection_id, selection, counts, model_version_id=model_version_id, reviewed_only=reviewed_only):
        stem = stem_of(flat_name(image.rel_path, taken))
        name = f"{stem}.jpg"
        sink.write_text(f"Annotations/{stem}.xml", voc_xml(image, name, names))
        _add_image(sink, blobs, f"JPEGImages/{name}", image, counts, as_jpeg=True)
        subset = split.subset(image.image_id)
        subsets[subset].append(stem)
        counts[f"{subset}_images"] += 1
        counts["images"] += 1
        counts["annotations"] += sum(1 for b in image.boxes if b[0] in names)
    for subset, stems in (("train", subsets["train"]), ("val", subsets["val"]), ("trainval", subsets["train"] + subsets["val"])):
        sink.write_text(f"ImageSets/Main/{subset}.txt", "".join(f"{s}\n" for s in stems))
    sink.write_text("labels.txt", "".join(f"{n}\n" for n in categories.names))
    return counts
