"""Box rules by name: ``BoxParams.mode`` selects one.

A rule turns one class's normalised map on the working grid into boxes in image pixels:
``rule(norm[H, W], (width, height), params) -> (boxes[M, 4] xyxy, scores[M])``, best first.
``params`` arrive resolved for the class, with an adaptive threshold already a number (see
:func:`boxes_from_normalized` below).

The built-in rules are listed in :data:`_BOX_RULES` below; :func:`register_box_rule` adds
another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import Tensor

from camcore.boxes.components import component_boxes, largest_component_box, object_component_boxes
from camcore.boxes.correction import BoxCorrection
from camcore.boxes.params import BoxParams

__all__ = ["BoxRule", "box_rule", "box_rules", "boxes_from_normalized", "register_box_rule"]

BoxRule = Callable[[Tensor, tuple[int, int], BoxParams], tuple[Tensor, Tensor]]


def _threshold(p: BoxParams) -> float:
    # boxes_from_normalized resolves an adaptive (None) threshold before calling a rule
    return 0.0 if p.threshold is None else p.threshold


def _largest(norm: Tensor, image_size: tuple[int, int], p: BoxParams) -> tuple[Tensor, Tensor]:
    """The CAM paper's rule: the largest component above the threshold."""
    return largest_component_box(norm, image_size, threshold=_threshold(p))


def _multi(norm: Tensor, image_size: tuple[int, int], p: BoxParams) -> tuple[Tensor, Tensor]:
    """Every component of at least ``min_area``."""
    return component_boxes(norm, image_size, threshold=_threshold(p), min_area=p.min_area)


def _objects(norm: Tensor, image_size: tuple[int, int], p: BoxParams) -> tuple[Tensor, Tensor]:
    """Components by activation mass (camlabel's default)."""
    return object_component_boxes(norm, image_size, threshold=_threshold(p), min_area=p.min_area,
                                  secondary_mass=p.secondary_mass)


_BOX_RULES: dict[str, BoxRule] = {
    "largest": _largest,
    "multi": _multi,
    "objects": _objects,
}


def register_box_rule(name: str, rule: BoxRule, *, replace: bool = False) -> None:
    """Register ``rule(norm_map[H, W] on the working grid, (width, height), params) -> (boxes[M,4], scores[M])``."""
    if name in _BOX_RULES and not replace:
        raise ValueError(f"box rule {name!r} is already registered")
    _BOX_RULES[name] = rule


def box_rules() -> tuple[str, ...]:
    """Names of the registered box rules."""
    return tuple(_BOX_RULES)


def box_rule(name: str) -> BoxRule:
    """The rule registered as ``name``; ``ValueError`` naming the registered ones otherwise."""
    try:
        return _BOX_RULES[name]
    except KeyError:
        raise ValueError(f"unknown box mode {name!r}; registered: {sorted(_BOX_RULES)}") from None


def boxes_from_normalized(norm: Tensor, image_size: tuple[int, int], params: BoxParams) -> tuple[Tensor, Tensor]:
    """One class's ``(boxes[M, 4], scores[M])`` from its normalised working-grid map with ``params``
    (already resolved for that class: see :meth:`BoxParams.for_class`): the adaptive threshold
    resolved, the rule of ``params.mode``, at most ``max_boxes_per_class`` boxes, ``box_scale``
    applied; no class scaling, no NMS."""
    p = replace(params, threshold=params.resolved_threshold(norm))
    b, s = box_rule(p.mode)(norm, image_size, p)
    b, s = b[: p.max_boxes_per_class], s[: p.max_boxes_per_class]
    if p.box_scale != 1.0 and len(b):  # scaled about the centre, clipped: a uniform box correction
        b = BoxCorrection(width=p.box_scale, height=p.box_scale).apply(b, image_size)
    return b, s
