"""A small generated collection for the demo when the shared photo collection is absent.

Two classes of coloured shapes on textured backgrounds, laid out as ``ROOT/<tag>/NNN.jpg`` (the
folder layout ``camlabel import`` reads), plus Pascal VOC ground truth in
``ROOT/<tag>/annotations/NNN.xml`` so the evaluation page has something to show.
"""

from __future__ import annotations

import random
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image, ImageDraw, ImageFilter

CLASSES = {"disc": (220, 40, 40), "square": (40, 80, 220)}


def generate_shapes_collection(root: Path, *, per_class: int = 30, size: tuple[int, int] = (320, 240), seed: int = 0) -> Path:
    """Write ``per_class`` JPEGs per class under ``root``; returns ``root``. Deterministic for a seed."""
    rng = random.Random(seed)
    width, height = size
    for tag, colour in CLASSES.items():
        images_dir, annotations_dir = root / tag / "images", root / tag / "annotations"
        images_dir.mkdir(parents=True, exist_ok=True)
        annotations_dir.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            background = Image.effect_noise((width, height), rng.uniform(30, 70)).convert("RGB")
            tint = Image.new("RGB", (width, height), tuple(rng.randint(90, 200) for _ in range(3)))
            image = Image.blend(background, tint, 0.6).filter(ImageFilter.GaussianBlur(1))
            side = rng.randint(min(width, height) // 4, min(width, height) // 2)
            x1, y1 = rng.randint(0, width - side), rng.randint(0, height - side)
            box = (x1, y1, x1 + side, y1 + side)
            draw = ImageDraw.Draw(image)
            (draw.ellipse if tag == "disc" else draw.rectangle)(box, fill=colour)
            name = f"{index:03d}"
            image.save(images_dir / f"{name}.jpg", quality=92)
            (annotations_dir / f"{name}.xml").write_text(_voc_xml(f"{name}.jpg", (width, height), tag, box))
    return root


def _voc_xml(file_name: str, size: tuple[int, int], tag: str, box: tuple[int, int, int, int]) -> str:
    x1, y1, x2, y2 = box
    return (
        f"<annotation><filename>{escape(file_name)}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
        f"<depth>3</depth></size><object><name>{escape(tag)}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object></annotation>"
    )
