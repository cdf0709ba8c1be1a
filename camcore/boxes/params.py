"""How maps become boxes: :class:`BoxParams`, JSON-safe (``to_dict`` / ``from_dict``).

Stored as JSON (a job's parameters, ``model_versions.calibration``), so the field names and the
dict shape are a stored format: add fields with defaults, never rename one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["BoxParams"]


@dataclass
class BoxParams:
    """How maps become boxes.

    The defaults are camlabel's recommended method (measured by ``bench/quality.py``): the class CAM
    fused with a per-class DDT objectness map (``"ddt_cam"``, :mod:`camcore.objectness`), min-max
    normalised, thresholded at the map's own mean (no dataset constant), boxes of the components
    ordered by activation mass (``"objects"``). ``BoxParams(method="cam", mode="largest",
    threshold=0.2, normalize="max")`` is the CAM paper's vanilla rule.

    Attributes:
        method: map method name: ``"ddt_cam"`` (default; needs the model's objectness statistics
            in ``spec.extra["objectness"]``, else each image's own descriptors are used) or
            ``"cam"`` (Zhou et al.'s class activation map).
        mode: box rule name: ``"objects"`` (default: components by activation mass, see
            :func:`camcore.boxes.components.object_component_boxes`), ``"largest"`` (paper:
            largest component above threshold) or ``"multi"`` (every component of at least
            ``min_area``).
        threshold: fraction of the normalised map's maximum (0..1), or ``None`` (default) for the
            adaptive rule ``mean(normalised map) * mean_factor``.
        mean_factor: multiplier of the adaptive threshold (used when ``threshold`` is ``None``).
        secondary_mass: ``"objects"`` keeps a further component only if its activation mass is at
            least this fraction of the main component's (several instances of a class).
        per_class: ``{"<class index>": {field: value}}`` overrides per class (set by
            :mod:`camcore.calibration`); only ``threshold``, ``mean_factor``, ``mode``,
            ``secondary_mass``, ``min_area`` and ``box_scale`` may be overridden.
        box_scale: width and height of every box are multiplied by this about its centre (then
            clipped to the image); 1.0 = unchanged. Calibration learns it per class.
        normalize: ``"max"`` (``map / max``) or ``"minmax"`` before thresholding.
        min_area: minimum component area for ``"multi"``, as a fraction of the image area.
        nms_iou: IoU of class-aware NMS over an image's boxes; ``>= 1`` disables NMS.
        max_boxes_per_class: keep at most this many boxes per (image, class) map.
        working_size: longest side in pixels of the grid boxes are extracted on.
        extra: JSON-safe options for registered methods/rules.
    """

    method: str = "ddt_cam"
    mode: str = "objects"
    threshold: float | None = None
    normalize: str = "minmax"
    min_area: float = 0.01
    nms_iou: float = 0.5
    max_boxes_per_class: int = 10
    working_size: int = 256
    extra: dict[str, Any] = field(default_factory=dict)
    mean_factor: float = 1.0
    secondary_mass: float = 0.25
    box_scale: float = 1.0
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.threshold is not None:
            if not 0.0 <= float(self.threshold) <= 1.0:
                raise ValueError(f"threshold must be in [0, 1] or None, got {self.threshold}")
            self.threshold = float(self.threshold)
        if not 0.0 < float(self.mean_factor) <= 10.0:
            raise ValueError(f"mean_factor must be in (0, 10], got {self.mean_factor}")
        if not 0.0 <= float(self.secondary_mass) <= 1.0:
            raise ValueError(f"secondary_mass must be in [0, 1], got {self.secondary_mass}")
        if not 0.25 <= float(self.box_scale) <= 4.0:
            raise ValueError(f"box_scale must be in [0.25, 4], got {self.box_scale}")
        self.box_scale = float(self.box_scale)
        self.mean_factor = float(self.mean_factor)
        self.secondary_mass = float(self.secondary_mass)
        per_class: dict[str, dict[str, Any]] = {}
        for key, over in dict(self.per_class or {}).items():
            if not isinstance(over, Mapping):
                raise ValueError(f"per_class[{key!r}] must be a dict, got {over!r}")
            bad = set(over) - _PER_CLASS_FIELDS
            if bad:
                raise ValueError(f"per_class[{key!r}] may only set {sorted(_PER_CLASS_FIELDS)}, got {sorted(bad)}")
            try:
                int(key)
            except (TypeError, ValueError):
                raise ValueError(f"per_class keys must be class indices, got {key!r}") from None
            per_class[str(int(key))] = dict(over)
        self.per_class = per_class
        if not 0.0 <= float(self.min_area) <= 1.0:
            raise ValueError(f"min_area must be in [0, 1], got {self.min_area}")
        if self.normalize not in ("max", "minmax"):
            raise ValueError(f"normalize must be 'max' or 'minmax', got {self.normalize!r}")
        if int(self.working_size) < 8:
            raise ValueError(f"working_size must be >= 8, got {self.working_size}")
        if int(self.max_boxes_per_class) < 1:
            raise ValueError(f"max_boxes_per_class must be >= 1, got {self.max_boxes_per_class}")
        self.min_area = float(self.min_area)
        self.nms_iou = float(self.nms_iou)
        self.working_size = int(self.working_size)
        self.max_boxes_per_class = int(self.max_boxes_per_class)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> BoxParams:
        """Build from a dict; missing keys take defaults, unknown keys raise ``ValueError``."""
        data = dict(data or {})
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown BoxParams fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**data)

    def for_class(self, cls: int) -> BoxParams:
        """These params with ``per_class[str(cls)]`` applied (and no per-class table)."""
        over = self.per_class.get(str(int(cls)))
        if not over and not self.per_class:
            return self
        return replace(self, per_class={}, **(over or {}))

    def resolved_threshold(self, norm: Tensor) -> float:
        """Threshold on a normalised map: ``threshold``, or ``mean(norm) * mean_factor`` (capped at 1)."""
        if self.threshold is not None:
            return self.threshold
        mean = float(norm.detach().cpu().numpy().mean(dtype=np.float64))  # numpy: no thread team for one small map
        return float(min(1.0, max(0.0, mean * self.mean_factor)))


_PER_CLASS_FIELDS = frozenset({"threshold", "mean_factor", "mode", "secondary_mass", "min_area", "box_scale"})
