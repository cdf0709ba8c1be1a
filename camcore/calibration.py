"""Calibration from review: per-class box parameters from a few reviewer-approved boxes.

No model pass: candidates are scored by recomputing boxes from the *stored* low-resolution maps
(:func:`camcore.pipeline.boxes_from_maps`). For each class with reviewed images, every candidate
threshold rule (the adaptive ``mean * factor`` rule over a range of factors, and fixed fractions
of the maximum) combined with a box scale (boxes grown/shrunk about their centres) is scored on
those images by

    objective = (#images whose top box has IoU >= 0.5 with a reviewed box) + mean best IoU

and the best one becomes ``per_class[str(c)]`` of the returned params -- only if it localises at
least ``MIN_EXTRA_HITS`` more reviewed images than the base params, with no lower mean IoU, and
beats the base objective by ``MIN_GAIN`` (guards against fitting noise in five images: on the
raccoon-kangaroo set, accepting any objective gain lost about 0.02 CorLoc on the other images).
The result is a JSON-safe dict for
``BoxParams.from_dict`` (store it in ``model_versions.calibration``).

Typical use by the ``calibrate`` job::

    params = calibrate(maps_by_image, image_sizes, reviewed_boxes, base_params)
    boxes = apply(maps_by_image, image_sizes, params, class_scores=class_scores)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import box_iou

from camcore.pipeline import BoxParams, boxes_from_maps, boxes_from_normalized, normalized_map

__all__ = ["BOX_SCALES", "FIXED_THRESHOLDS", "MEAN_FACTORS", "apply", "calibrate", "score_params"]

MEAN_FACTORS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0)
FIXED_THRESHOLDS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)
BOX_SCALES: tuple[float, ...] = (0.85, 0.92, 1.0, 1.08, 1.16, 1.25)
IOU_WEIGHT = 1.0  # objective = hits + IOU_WEIGHT * mean best IoU
MIN_GAIN = 0.05  # a candidate must beat the base objective by this much (noise guard for 5 images)
MIN_EXTRA_HITS = 1  # ... and localise at least this many more reviewed images, with no lower mean IoU

Key = Hashable
ReviewedBoxes = Mapping[Key, Sequence[tuple[int, Sequence[float]]]]


def _as_params(params: BoxParams | Mapping[str, Any] | None) -> BoxParams:
    if isinstance(params, BoxParams):
        return params
    return BoxParams.from_dict(params)


def _reviewed_by_class(reviewed: ReviewedBoxes) -> dict[int, dict[Key, Tensor]]:
    out: dict[int, dict[Key, list[list[float]]]] = {}
    for key, items in reviewed.items():
        for entry in items:
            try:
                cls, box = entry
                xyxy = [float(v) for v in box]
            except (TypeError, ValueError) as exc:
                raise ValueError(f"reviewed box of image {key!r} must be (class, [x1, y1, x2, y2]), got {entry!r}") from exc
            if len(xyxy) != 4 or not (xyxy[2] > xyxy[0] and xyxy[3] > xyxy[1]):
                raise ValueError(f"reviewed box of image {key!r} is not a valid xyxy box: {box!r}")
            out.setdefault(int(cls), {}).setdefault(key, []).append(xyxy)
    return {c: {k: torch.tensor(v, dtype=torch.float32) for k, v in d.items()} for c, d in out.items()}


def score_params(
    params: BoxParams,
    norms: Mapping[Key, Tensor | None],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth: Mapping[Key, Tensor],
) -> tuple[int, float]:
    """(hits, mean best IoU) of the top box of one class against ``truth`` (``Tensor[M, 4]`` per
    image), from the class's normalised working-grid maps ``norms`` (see
    :func:`camcore.pipeline.normalized_map`; ``None`` = no evidence = a miss)."""
    hits, ious = 0, []
    for key, gt in truth.items():
        norm = norms[key]
        boxes = boxes_from_normalized(norm, tuple(image_sizes[key]), params)[0] if norm is not None else torch.zeros(0, 4)  # type: ignore[arg-type]
        best = float(box_iou(boxes[:1], gt).max()) if len(boxes) else 0.0
        hits += best >= 0.5
        ious.append(best)
    return hits, (sum(ious) / len(ious) if ious else 0.0)


def calibrate(
    maps_by_image: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
    reviewed_boxes: ReviewedBoxes,
    base_params: BoxParams | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Pick per-class threshold rules from reviewed boxes.

    Args:
        maps_by_image: image key -> {class index: stored raw map ``Tensor[h, w]``} (e.g. decoded
            float16 ``.npy`` concept maps).
        image_sizes: image key -> (width, height) in pixels of the original image.
        reviewed_boxes: image key -> list of ``(class index, [x1, y1, x2, y2])`` accepted or
            corrected boxes in image pixels (a few per class; 5 is plenty).
        base_params: the params the maps were boxed with (``BoxParams`` or its dict; default
            ``BoxParams()``); its own ``per_class`` entries are replaced for calibrated classes.

    Returns:
        ``BoxParams.to_dict()`` of the calibrated params (JSON-safe): the per-class choice is in
        ``result["per_class"]``; ``result["extra"]["calibration"]`` records for each class the
        number of images used and the base/chosen (hits, mean IoU).

    Raises:
        ValueError: malformed reviewed boxes, or a reviewed image without a size.
    """
    base = _as_params(base_params)
    truth_by_class = _reviewed_by_class(reviewed_boxes)
    per_class = dict(base.per_class)
    report: dict[str, Any] = {}
    for cls, truth in sorted(truth_by_class.items()):
        missing = [k for k in truth if k not in image_sizes]
        if missing:
            raise ValueError(f"no image size for reviewed images {missing!r}")
        base_c = base.for_class(cls)
        usable = {k: v for k, v in truth.items() if cls in maps_by_image.get(k, {})}
        if not usable:
            continue
        norms = {k: normalized_map(maps_by_image[k][cls], tuple(image_sizes[k]), base_c) for k in usable}  # type: ignore[arg-type]
        base_hits, base_iou = score_params(base_c, norms, image_sizes, usable)
        base_obj = base_hits + IOU_WEIGHT * base_iou
        best_obj = base_obj + MIN_GAIN
        min_hits = base_hits + MIN_EXTRA_HITS
        best: dict[str, Any] | None = None
        best_score = (base_hits, base_iou)
        rules: list[dict[str, Any]] = [{"threshold": None, "mean_factor": f} for f in MEAN_FACTORS]
        rules += [{"threshold": t} for t in FIXED_THRESHOLDS]
        for rule in rules:
            for scale in BOX_SCALES:
                cand = {**rule, "box_scale": scale}
                hits, iou = score_params(replace(base_c, **cand), norms, image_sizes, usable)
                obj = hits + IOU_WEIGHT * iou
                if hits >= min_hits and iou >= base_iou and obj > best_obj + 1e-9:
                    best_obj, best, best_score = obj, cand, (hits, iou)
        if best is not None:
            per_class[str(cls)] = {**per_class.get(str(cls), {}), **best}
        report[str(cls)] = {
            "images": len(usable),
            "base": {"hits": base_hits, "mean_iou": round(base_iou, 4)},
            "chosen": {"hits": best_score[0], "mean_iou": round(best_score[1], 4)},
            "params": best if best is not None else "base",
        }
    result = replace(base, per_class=per_class).to_dict()
    result["extra"] = {**dict(result.get("extra") or {}), "calibration": report}
    return result


def apply(
    maps_by_image: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
    params: BoxParams | Mapping[str, Any],
    *,
    class_scores: Mapping[Key, Tensor | Mapping[int, float]] | None = None,
) -> dict[Key, tuple[Tensor, Tensor, Tensor]]:
    """Recompute every image's boxes with (calibrated) params, no model pass.

    Returns:
        image key -> ``(boxes[N, 4] xyxy pixels, scores[N], labels[N])`` as
        :func:`camcore.pipeline.boxes_from_maps` gives them.
    """
    p = _as_params(params)
    out: dict[Key, tuple[Tensor, Tensor, Tensor]] = {}
    for key, maps in maps_by_image.items():
        if key not in image_sizes:
            raise ValueError(f"no image size for image {key!r}")
        cs = None if class_scores is None else class_scores.get(key)
        out[key] = boxes_from_maps(maps, tuple(image_sizes[key]), p, class_scores=cs)  # type: ignore[arg-type]
    return out
