"""Rows for the format tests: collections of small real image files with boxes (:class:`Factory`) and
the standard scene the fixtures build (:data:`IMAGES`, :data:`BOXES`)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

from PIL import Image as PILImage
from PIL import ImageDraw

from worker.store.models import Box, BoxSource, Category, Collection, Image, ImageStatus, ReviewStatus


def make_image_bytes(width: int, height: int, seed: int, fmt: str = "JPEG") -> bytes:
    """A small distinct picture (a coloured rectangle on a background), encoded."""
    img = PILImage.new("RGB", (width, height), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    draw = ImageDraw.Draw(img)
    draw.rectangle([width // 4, height // 4, width // 2 + seed % (width // 4), height // 2], fill=(255 - (seed * 37) % 256, 40, 200))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@dataclass
class Built:
    collection_id: int
    category_ids: dict[str, int]
    image_ids: dict[str, int] = field(default_factory=dict)  # rel_path -> id
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


class Factory:
    """Creates collections, images (real JPEG blobs) and boxes in one runtime."""

    def __init__(self, runtime) -> None:  # type: ignore[no-untyped-def]
        self.runtime = runtime

    def collection(self, name: str, categories: list[str], images: list[tuple[str, int, int]], *, failed: dict[str, str] | None = None, seed: int = 0) -> Built:
        failed = failed or {}
        with self.runtime.sessions() as session:
            collection = Collection(name=name)
            session.add(collection)
            session.flush()
            cats = {}
            for cname in categories:
                category = Category(collection_id=collection.id, name=cname)
                session.add(category)
                session.flush()
                cats[cname] = category.id
            built = Built(collection.id, cats)
            for n, (rel_path, width, height) in enumerate(images):
                data = make_image_bytes(width, height, seed * 1000 + n)
                key = self.runtime.blobs.put_bytes(data, kind="images", suffix=".jpg")
                row = Image(
                    collection_id=collection.id,
                    sha256=hashlib.sha256(data).hexdigest(),
                    rel_path=rel_path,
                    storage_key=key,
                    width=None if rel_path in failed else width,
                    height=None if rel_path in failed else height,
                    status=ImageStatus.failed if rel_path in failed else ImageStatus.ok,
                    failure_reason=failed.get(rel_path),
                )
                session.add(row)
                session.flush()
                built.image_ids[rel_path] = row.id
                built.sizes[rel_path] = (width, height)
            session.commit()
        return built

    def boxes(self, built: Built, boxes: list[tuple[str, str, tuple[float, float, float, float], float | None, BoxSource, ReviewStatus]],
              *, model_version_id: int | None = None) -> list[int]:
        """Add boxes ``(rel_path, category name, xyxy, score, source, status)``; returns their ids."""
        with self.runtime.sessions() as session:
            rows = [
                Box(image_id=built.image_ids[rel], category_id=built.category_ids[cat], x1=b[0], y1=b[1], x2=b[2], y2=b[3],
                    score=score, source=source, status=status, model_version_id=model_version_id)
                for rel, cat, b, score, source, status in boxes
            ]
            session.add_all(rows)
            session.commit()
            return [r.id for r in rows]

    def no_objects(self, built: Built, rel_path: str) -> None:
        """Mark an image "no objects" as a reviewer would (``worker.store.review_state``)."""
        from worker.store.review_state import set_no_objects

        with self.runtime.sessions() as session:
            set_no_objects(session, built.image_ids[rel_path], user_id=None)
            session.commit()

    def add_category(self, built: Built, name: str) -> int:
        with self.runtime.sessions() as session:
            category = Category(collection_id=built.collection_id, name=name)
            session.add(category)
            session.commit()
            built.category_ids[name] = category.id
            return category.id


CAM, HUMAN, GT = BoxSource.cam, BoxSource.human, BoxSource.ground_truth
PROPOSED, ACCEPTED, REJECTED, EDITED = ReviewStatus.proposed, ReviewStatus.accepted, ReviewStatus.rejected, ReviewStatus.edited

# A small standard scene: 5 images (one with no boxes, one failed), two classes.
IMAGES = [
    ("cats/images/c1.jpg", 64, 48),
    ("cats/images/c2.jpg", 80, 60),
    ("dogs/images/d1.jpg", 50, 70),
    ("dogs/images/d2.jpg", 40, 40),
    ("dogs/images/empty.jpg", 30, 30),
    ("dogs/images/broken.jpg", 30, 30),
]
BOXES = [
    ("cats/images/c1.jpg", "cat", (4, 5, 40, 30), 0.9, CAM, ACCEPTED),
    ("cats/images/c1.jpg", "cat", (30, 20, 63, 47), 0.4, CAM, PROPOSED),
    ("cats/images/c2.jpg", "cat", (10, 10, 70, 50), 0.8, CAM, EDITED),
    ("cats/images/c2.jpg", "dog", (0, 0, 20, 20), 0.7, CAM, REJECTED),
    ("dogs/images/d1.jpg", "dog", (5, 5, 45, 65), None, HUMAN, ACCEPTED),
    ("dogs/images/d1.jpg", "dog", (-3, 10, 60, 80), 0.6, CAM, ACCEPTED),  # sticks out: clipped on export
    ("dogs/images/d2.jpg", "dog", (2, 2, 30, 30), 0.55, CAM, PROPOSED),
    ("dogs/images/d2.jpg", "dog", (1, 1, 39, 39), 1.0, GT, ACCEPTED),
]
