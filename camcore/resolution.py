"""Whether reviewed objects are large enough for the maps' cells to box them.

Boxes come from maps of ``h x w`` cells (14 x 14 for a 448 px input at stride 32), so a box edge is
placed to about half a cell. An object ``L`` cells on a side whose box is off by half a cell at
each edge, outward, overlaps it with IoU ``(L / (L + 1))^2``, which reaches 0.5 only for
``L >= 1 / (sqrt(2) - 1)``, about 2.41 cells (:data:`FINEST_SIDE_CELLS`). Where most reviewed
objects are smaller than that, no threshold, correction or learned map on those cells can box
them reliably at IoU 0.5; a larger network input (finer cells) can.

The bound is geometry, not a figure fitted to a collection. On the development collections the
median ground-truth object measures 1.29 cells on aquarium (fish: flagged), 4.50 on
playing_cards and 7.85 on raccoon-kangaroo (not flagged); aquarium trained at 896 px instead of
448 boxed 0.192 of the other images after 20 reviewed instead of 0.155 (README).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

__all__ = ["FINEST_SIDE_CELLS", "ResolutionCheck", "check_resolution", "map_grids"]

Key = TypeVar("Key", bound=Hashable)

FINEST_SIDE_CELLS = 1.0 / (math.sqrt(2.0) - 1.0)
"""Smallest object side, in map cells, whose box a cell grid places at IoU >= 0.5 even when each
edge is off by half a cell (module doc): about 2.41."""


@dataclass(frozen=True)
class ResolutionCheck:
    """The reviewed objects' size against the maps' cells.

    Attributes:
        boxes: reviewed boxes measured.
        median_side_cells: median over them of ``sqrt(width_cells * height_cells)``, each side in
            cells of its image's map.
        grid: cells along the maps' longest side (median over the reviewed images).
    """

    boxes: int
    median_side_cells: float
    grid: int

    @property
    def too_small(self) -> bool:
        """Most reviewed objects are under :data:`FINEST_SIDE_CELLS` on a side."""
        return self.boxes > 0 and self.median_side_cells < FINEST_SIDE_CELLS

    def suggested_input_size(self, input_size: int, *, limit: int = 4096) -> int:
        """The network input side (pixels) at which the median reviewed object measures
        :data:`FINEST_SIDE_CELLS`: ``input_size`` scaled up, rounded up to a whole number of the
        current cell size, at most ``limit``; ``input_size`` when the objects are large enough."""
        if input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {input_size}")
        if not self.too_small:
            return int(input_size)
        cell = max(1, round(input_size / max(self.grid, 1)))
        scale = FINEST_SIDE_CELLS / max(self.median_side_cells, 1e-6)
        return int(min(limit, math.ceil(input_size * scale / cell) * cell))

    def to_dict(self) -> dict[str, Any]:
        return {"boxes": self.boxes, "median_side_cells": round(self.median_side_cells, 3), "grid": self.grid,
                "finest_side_cells": round(FINEST_SIDE_CELLS, 3), "too_small": self.too_small}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResolutionCheck:
        try:
            return cls(int(data["boxes"]), float(data["median_side_cells"]), int(data["grid"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed resolution check {dict(data)!r}: {exc}") from None


def map_grids(maps_by_image: Mapping[Key, Mapping[int, Any]]) -> dict[Key, tuple[int, int]]:
    """image key -> (rows, columns) of its maps (``Tensor[h, w]`` per class; images without maps left out)."""
    return {key: (int(m.shape[-2]), int(m.shape[-1])) for key, per_class in maps_by_image.items() for m in per_class.values()}


def check_resolution(
    reviewed_boxes: Mapping[Key, Sequence[tuple[int, Sequence[float]]]],
    image_sizes: Mapping[Key, tuple[int, int]],
    grid_shapes: Mapping[Key, tuple[int, int]],
) -> ResolutionCheck:
    """Measure the reviewed boxes in cells of their images' maps.

    Args:
        reviewed_boxes: image key -> ``[(class index, [x1, y1, x2, y2])]`` in image pixels.
        image_sizes: image key -> (width, height) in pixels.
        grid_shapes: image key -> (rows, columns) of the image's maps (``Tensor[h, w]``).

    Returns:
        The check over the boxes of images with a size and a map grid (``boxes == 0``: none).
    """
    sides: list[float] = []
    grids: list[int] = []
    for key, boxes in reviewed_boxes.items():
        if key not in image_sizes or key not in grid_shapes:
            continue
        width, height = (float(v) for v in image_sizes[key])
        rows, cols = (int(v) for v in grid_shapes[key])
        if width <= 0 or height <= 0 or rows < 1 or cols < 1:
            continue
        grids.append(max(rows, cols))
        for _cls, (x1, y1, x2, y2) in boxes:
            w_cells = max(float(x2) - float(x1), 0.0) * cols / width
            h_cells = max(float(y2) - float(y1), 0.0) * rows / height
            sides.append(math.sqrt(w_cells * h_cells))
    if not sides:
        return ResolutionCheck(0, 0.0, int(np.median(grids)) if grids else 0)
    return ResolutionCheck(len(sides), float(np.median(sides)), int(np.median(grids)))
