"""The box rule: how class maps become scored boxes in image pixels.

- :mod:`camcore.boxes.params`: :class:`BoxParams` (JSON-safe; stored with jobs and calibrations)
- :mod:`camcore.boxes.components`: connected-component boxes on a normalised map, class-aware NMS
- :mod:`camcore.boxes.rules`: the rules by name (``BoxParams.mode``), :func:`register_box_rule`,
  :func:`boxes_from_normalized` (one class's boxes from its normalised map)
- :mod:`camcore.boxes.correction`: per-class box corrections learnt by :mod:`camcore.calibration`
- :mod:`camcore.boxes.review_map`: a location map learnt from reviewed boxes, applied before the rule
- :mod:`camcore.boxes.score`: the probability that a box is right, from its map
- :mod:`camcore.boxes.agreement`: after review, that probability weighed by the GT-free proposals
- :mod:`camcore.boxes.from_maps`: :func:`boxes_from_maps`, all of the above for one image
- :mod:`camcore.boxes.workers`: :class:`BoxWorkers`, the same function in worker processes
"""

from camcore.boxes.components import (
    component_boxes,
    largest_component_box,
    nms,
    normalize_map,
    object_component_boxes,
    upsample_map,
    working_shape,
)
from camcore.boxes.correction import BoxCorrection, corrections_from_extra
from camcore.boxes.from_maps import boxes_from_maps, normalized_map
from camcore.boxes.params import BoxParams
from camcore.boxes.review_map import ReviewMap, review_map_from_extra
from camcore.boxes.rules import BoxRule, box_rule, box_rules, boxes_from_normalized, register_box_rule
from camcore.boxes.score import BoxScorer, score_boxes
from camcore.boxes.workers import BoxWorkers, MapsOfImage

__all__ = [
    "BoxCorrection",
    "BoxParams",
    "BoxRule",
    "BoxScorer",
    "BoxWorkers",
    "MapsOfImage",
    "ReviewMap",
    "box_rule",
    "box_rules",
    "boxes_from_maps",
    "boxes_from_normalized",
    "component_boxes",
    "corrections_from_extra",
    "largest_component_box",
    "nms",
    "normalize_map",
    "normalized_map",
    "object_component_boxes",
    "register_box_rule",
    "review_map_from_extra",
    "score_boxes",
    "upsample_map",
    "working_shape",
]
