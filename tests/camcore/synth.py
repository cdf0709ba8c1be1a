"""Generated images for camcore tests: one coloured shape on a textured background.

Each image holds exactly one shape; its class (``SHAPES`` index) is the image's only tag and its
true box is known, so localisation can be scored without any hand labels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("square", "disc", "triangle")
COLOURS = {"square": (230, 40, 40), "disc": (40, 200, 60), "triangle": (50, 90, 235)}


def textured_background(rng: np.random.Generator, size: int) -> Image.Image:
    """Grey-brown noise plus random stripes (no saturated colours)."""
    base = rng.integers(90, 170, size=3)
    noise = rng.normal(0, 18, size=(size, size, 1))
    yy, xx = np.mgrid[0:size, 0:size]
    angle = rng.uniform(0, np.pi)
    stripes = 20 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(3, 8))[..., None]
    grey = base.mean()
    arr = np.clip(grey + 0.35 * (base - grey) + noise + stripes, 0, 255).astype(np.uint8)  # [size, size, 3]
    return Image.fromarray(np.ascontiguousarray(arr))


def make_shape_image(rng: np.random.Generator, cls: int, size: int = 96) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """(image, xyxy box of the shape in pixels)."""
    img = textured_background(rng, size)
    draw = ImageDraw.Draw(img)
    side = int(rng.integers(size // 4, size // 2))
    x0 = int(rng.integers(0, size - side))
    y0 = int(rng.integers(0, size - side))
    x1, y1 = x0 + side, y0 + side
    shape = SHAPES[cls]
    jitter = rng.integers(-25, 26, size=3)
    colour = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[shape], jitter, strict=True))
    if shape == "square":
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=colour)
    elif shape == "disc":
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=colour)
    else:
        draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1) / 2, y0)], fill=colour)
    return img, (float(x0), float(y0), float(x1), float(y1))


def make_dataset(
    n: int, seed: int, size: int = 96, *, negatives: int = 0
) -> tuple[list[Image.Image], list[list[int]], list[tuple[float, float, float, float] | None]]:
    """``n`` shape images (classes in turn) then ``negatives`` background-only images (no tag).

    Returns (images, tags per image, box per image or ``None`` for a negative).
    """
    rng = np.random.default_rng(seed)
    images: list[Image.Image] = []
    tags: list[list[int]] = []
    boxes: list[tuple[float, float, float, float] | None] = []
    for i in range(n):
        cls = i % len(SHAPES)
        img, box = make_shape_image(rng, cls, size)
        images.append(img)
        tags.append([cls])
        boxes.append(box)
    for _ in range(negatives):
        images.append(textured_background(rng, size))
        tags.append([])
        boxes.append(None)
    return images, tags, boxes
