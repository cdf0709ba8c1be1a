"""A location map learned from reviewed boxes, applied to an image's maps before its boxes.

The class maps find an object's discriminative parts; reviewed boxes show what the whole object
looks like in this collection. A :class:`ReviewMap` is a per-cell logistic model on the image's
descriptor codes (``Tensor[d, h, w]``, :mod:`camcore.descriptor_basis`) and the class map,
fitted on reviewed boxes by :mod:`camcore.review_fit` (cells inside a reviewed box of the map's
class are positives). It replaces each class map by

    review(x, y) = (sigmoid(w . [codes[:, y, x], minmax(map)[y, x]] + b) + minmax(map)[y, x]) / 2

values in [0, 1], on the map's grid; the box rule then runs on it as on any map. It lives in
``BoxParams.extra[EXTRA_KEY]`` (JSON-safe, inside ``model_versions.calibration``), so calibration
and later infer jobs give the same boxes; stored raw maps are never replaced, so calibrating again
starts from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["EXTRA_KEY", "ReviewMap", "review_map_from_extra"]

#: Key of the review map in ``BoxParams.extra``.
EXTRA_KEY = "review_map"


def _minmax(m: Tensor) -> Tensor:
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if float(hi - lo) > 1e-12 else torch.zeros_like(m)


@dataclass(frozen=True)
class ReviewMap:
    """Per-cell logistic weights (see the module docstring).

    Attributes:
        code_weights: one weight per code dimension (d).
        map_weight: weight of the min-max scaled class map.
        bias: intercept.
    """

    code_weights: tuple[float, ...]
    map_weight: float
    bias: float

    def __post_init__(self) -> None:
        values = [*self.code_weights, self.map_weight, self.bias]
        if not self.code_weights or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError(f"a review map needs finite weights for at least one code dimension, got {values!r}")

    @property
    def dimensions(self) -> int:
        return len(self.code_weights)

    def features(self, codes: Tensor, class_map: Tensor) -> Tensor:
        """Per-cell inputs ``Tensor[h * w, d + 1]`` float64: the codes, then the scaled class map."""
        if codes.dim() != 3 or codes.shape[0] != self.dimensions or tuple(codes.shape[1:]) != tuple(class_map.shape):
            raise ValueError(f"codes must be Tensor[{self.dimensions}, h, w] on the map's grid {tuple(class_map.shape)}, "
                             f"got {tuple(codes.shape)}")
        return cell_features(codes, class_map)

    def probability(self, codes: Tensor, class_map: Tensor) -> Tensor:
        """``Tensor[h, w]`` the learned probability that each cell is on an object of the map's class."""
        w = torch.tensor([*self.code_weights, self.map_weight], dtype=torch.float64)
        return torch.sigmoid(self.features(codes, class_map) @ w + self.bias).float().view(class_map.shape)

    def apply(self, codes: Tensor, class_map: Tensor) -> Tensor:
        """The review map ``Tensor[h, w]`` float32 in [0, 1] of ``class_map[h, w]`` given the image's
        ``codes[d, h, w]``."""
        return 0.5 * (self.probability(codes, class_map) + _minmax(class_map.detach().float().cpu()))

    def to_dict(self) -> dict[str, Any]:
        return {"code_weights": [round(float(v), 6) for v in self.code_weights], "map_weight": round(float(self.map_weight), 6),
                "bias": round(float(self.bias), 6)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReviewMap:
        """Inverse of :meth:`to_dict`; malformed data raises ``ValueError``."""
        try:
            return cls(tuple(float(v) for v in data["code_weights"]), float(data["map_weight"]), float(data["bias"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed review map: {exc}") from exc


def cell_features(codes: Tensor, class_map: Tensor) -> Tensor:
    """``Tensor[h * w, d + 1]`` float64: per cell its codes (``codes[d, h, w]``) and the min-max
    scaled ``class_map[h, w]``."""
    c = codes.detach().double().cpu().flatten(1).T
    m = _minmax(class_map.detach().double().cpu()).reshape(-1, 1)
    return torch.cat([c, m], dim=1)


def review_map_from_extra(extra: Mapping[str, Any] | None) -> ReviewMap | None:
    """The review map stored in ``BoxParams.extra``, or ``None``.

    Raises:
        ValueError: a malformed entry.
    """
    data = (extra or {}).get(EXTRA_KEY)
    return None if data is None else ReviewMap.from_dict(data)
