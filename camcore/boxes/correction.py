"""Per-class box corrections: a class's systematic size and offset bias, undone on every box.

A map-derived box of one class is often biased the same way in every image (a CAM box that also
covers the neighbour of an animal in a herd is too wide; one that stops at the head is too short
and too high). A :class:`BoxCorrection` maps a box with centre ``(cx, cy)`` and size ``(w, h)``
(image pixels) to

    centre (cx + shift_x * w, cy + shift_y * h), size (w * width, h * height),

clipped to the image. :mod:`camcore.calibration` learns one per class from reviewed boxes and
stores them in ``BoxParams.extra[EXTRA_KEY]`` as ``{"<class index>": BoxCorrection.to_dict()}``
(JSON-safe, so it travels inside ``model_versions.calibration``); :func:`corrections_from_extra`
reads them back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor

__all__ = ["EXTRA_KEY", "BoxCorrection", "corrections_from_extra"]

#: Key of the per-class corrections in ``BoxParams.extra``.
EXTRA_KEY = "box_correction"

_MIN_SCALE, _MAX_SCALE, _MAX_SHIFT = 0.25, 4.0, 1.0


@dataclass(frozen=True)
class BoxCorrection:
    """One class's box correction (see the module docstring).

    Attributes:
        width: factor on the box width, in [0.25, 4] (1 = unchanged).
        height: factor on the box height, in [0.25, 4].
        shift_x: centre moved right by this fraction of the box width, in [-1, 1].
        shift_y: centre moved down by this fraction of the box height, in [-1, 1].
    """

    width: float = 1.0
    height: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and _MIN_SCALE <= value <= _MAX_SCALE):
                raise ValueError(f"box correction {name} must be in [{_MIN_SCALE}, {_MAX_SCALE}], got {value}")
            object.__setattr__(self, name, value)
        for name in ("shift_x", "shift_y"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and -_MAX_SHIFT <= value <= _MAX_SHIFT):
                raise ValueError(f"box correction {name} must be in [-{_MAX_SHIFT}, {_MAX_SHIFT}], got {value}")
            object.__setattr__(self, name, value)

    @property
    def is_identity(self) -> bool:
        return self.width == 1.0 and self.height == 1.0 and self.shift_x == 0.0 and self.shift_y == 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BoxCorrection:
        """Build from :meth:`to_dict`'s output; missing keys are identity, unknown keys raise ``ValueError``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a box correction must be a dict, got {data!r}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown box correction fields {sorted(unknown)}")
        return cls(**{k: float(v) for k, v in data.items()})

    def apply(self, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
        """``boxes[N, 4]`` xyxy pixels -> corrected ``Tensor[N, 4]`` (float) clipped to (width, height)."""
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be Tensor[N, 4], got shape {tuple(boxes.shape)}")
        boxes = boxes.float()
        if self.is_identity or boxes.shape[0] == 0:
            return boxes.clone()
        size = boxes[:, 2:] - boxes[:, :2]
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + size * torch.tensor([self.shift_x, self.shift_y])
        half = size * torch.tensor([self.width, self.height]) / 2
        out = torch.cat([centre - half, centre + half], dim=1)
        out[:, 0::2] = out[:, 0::2].clamp(0, image_size[0])
        out[:, 1::2] = out[:, 1::2].clamp(0, image_size[1])
        return out


def corrections_from_extra(extra: Mapping[str, Any] | None) -> dict[int, BoxCorrection]:
    """``{class index: BoxCorrection}`` stored in ``BoxParams.extra`` (empty when there are none).

    Raises:
        ValueError: a malformed entry (bad class key or correction).
    """
    table = (extra or {}).get(EXTRA_KEY) or {}
    if not isinstance(table, Mapping):
        raise ValueError(f"extra[{EXTRA_KEY!r}] must be a dict of class index -> correction, got {table!r}")
    out: dict[int, BoxCorrection] = {}
    for key, value in table.items():
        try:
            cls = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"box correction keys must be class indices, got {key!r}") from None
        out[cls] = BoxCorrection.from_dict(value)
    return out
