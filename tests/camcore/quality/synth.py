"""Generated data for the quality tests: planted objects on textured backgrounds, synthetic maps."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """Grey noise with random stripes (no saturated colours)."""
    yy, xx = np.mgrid[0:size, 0:size]
    angle = rng.uniform(0, np.pi)
    stripes = 25 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(2, 6))
    grey = rng.uniform(90, 160) + stripes + rng.normal(0, 15, size=(size, size))
    arr = np.clip(np.repeat(grey[..., None], 3, axis=2), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr))


def plant(img: Image.Image, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    """Draw the common object: an orange disc with a dark-blue core, filling ``box``."""
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = box
    j = rng.integers(-20, 21, size=3)
    draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=(int(235 + j[0] // 4), int(140 + j[1]), int(30 + j[2] // 2)))
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 5
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(30, 40, 150))


def _free_box(rng: np.random.Generator, size: int, side: int, taken: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    for _ in range(50):
        x0, y0 = int(rng.integers(0, size - side)), int(rng.integers(0, size - side))
        box = (x0, y0, x0 + side, y0 + side)
        gap = side // 2
        if all(box[0] >= t[2] + gap or box[2] + gap <= t[0] or box[1] >= t[3] + gap or box[3] + gap <= t[1] for t in taken):
            return box
    return None


def planted_images(
    n: int, seed: int, *, size: int = 96, objects: tuple[int, int] = (1, 1), side: tuple[int, int] = (22, 34), negatives: int = 0
) -> tuple[list[Image.Image], list[list[int]], list[list[tuple[int, int, int, int]]]]:
    """``n`` images with ``objects[0]..objects[1]`` non-touching planted objects (tag ``[0]``), then
    ``negatives`` plain backgrounds (tag ``[]``). Returns (images, tags, true xyxy boxes per image)."""
    rng = np.random.default_rng(seed)
    images, tags, boxes = [], [], []
    for _ in range(n):
        img = background(rng, size)
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
            box = _free_box(rng, size, int(rng.integers(side[0], side[1] + 1)), placed)
            if box is not None:
                plant(img, box, rng)
                placed.append(box)
        images.append(img)
        tags.append([0])
        boxes.append(placed)
    for _ in range(negatives):
        images.append(background(rng, size))
        tags.append([])
        boxes.append([])
    return images, tags, boxes


def pyramid_map(box_at_level: tuple[float, float, float, float], level: float, size: tuple[int, int],
                grid: int = 24) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    """A map whose ``level`` set (fraction of its max) is exactly ``box_at_level`` (image pixels).

    ``map(x, y) = max(0, 1 - max(|x - cx| / a, |y - cy| / b))`` on a ``grid x grid`` map, with the
    half-sides ``a, b`` chosen so that ``{map >= level}`` is the box. Returns (map, box)."""
    w, h = size
    x0, y0, x1, y1 = box_at_level
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    a, b = (x1 - x0) / 2 / (1 - level), (y1 - y0) / 2 / (1 - level)
    xs = (torch.arange(grid, dtype=torch.float64) + 0.5) * w / grid
    ys = (torch.arange(grid, dtype=torch.float64) + 0.5) * h / grid
    d = torch.maximum((xs[None, :] - cx).abs() / a, (ys[:, None] - cy).abs() / b)
    return (1 - d).clamp(min=0).float(), box_at_level
