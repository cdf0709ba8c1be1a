"""Calibration from review: per-class box parameters from a few reviewer-approved boxes.

No model pass: candidates are scored by recomputing boxes from the *stored* low-resolution maps
(:func:`camcore.pipeline.boxes_from_maps`). For each class with reviewed images, every candidate
threshold rule (the adaptive ``mean * factor`` rule over a range of factors, and fixed fractions
of the maximum) is scored on those images by

    objective = (#images whose top box has IoU >= 0.5 with a reviewed box)
                + 0.5 * mean best IoU                                    (tie-break)

and the best one becomes ``per_class[str(c)]`` of the returned params -- only if it beats the base
params on the reviewed images (ties keep the base). The result is a JSON-safe dict for
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

from camcore.pipeline import BoxParams, boxes_from_maps

__all__ = ["MEAN_FACTORS", "FIXED_THRESHOLDS", "apply", "calibrate", "score_params"]

MEAN_FACTORS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0)
FIXED_THRESHOLDS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)

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
    cls: int,
    maps_by_image: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth: Mapping[Key, Tensor],
) -> tuple[int, float]:
    """(hits, mean best IoU) of the top box of class ``cls`` against ``truth`` (``Tensor[M, 4]``
    per image) over the images in ``truth`` that have a stored map of ``cls``."""
    hits, ious = 0, []
    for key, gt in truth.items():
        cam = maps_by_image.get(key, {}).get(cls)
        if cam is None:
            continue
        boxes, _, _ = boxes_from_maps({cls: cam}, tuple(image_sizes[key]), params)  # type: ignore[arg-type]
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
        ``BoxParams.to_dict()`` of the calibrated params (JSON-safe), plus ``"calibration"``-free:
        the per-class choice is in ``result["per_class"]``; ``result["extra"]["calibration"]``
        records for each class the images used and the base/calibrated (hits, mean IoU).

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
        base_hits, base_iou = score_params(base_c, cls, maps_by_image, image_sizes, usable)
        best_obj = base_hits + 0.5 * base_iou
        best: dict[str, Any] | None = None
        best_score = (base_hits, base_iou)
        candidates: list[dict[str, Any]] = [{"threshold": None, "mean_factor": f} for f in MEAN_FACTORS]
        candidates += [{"threshold": t} for t in FIXED_THRESHOLDS]
        for cand in candidates:
            hits, iou = score_params(replace(base_c, **cand), cls, maps_by_image, image_sizes, usable)
            obj = hits + 0.5 * iou
            if obj > best_obj + 1e-9:
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
