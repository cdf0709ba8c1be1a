"""Calibration from review: box parameters and a location map from a few reviewer-approved boxes.

No model pass: everything is recomputed from the *stored* low-resolution maps
(:func:`camcore.boxes.boxes_from_maps`). For each class with reviewed images, calibration is
always made relative to the *uncalibrated* params (``base_params`` without its per-class table and
box corrections), so calibrating twice from the same reviews gives the same result. Three stages:

1. **Threshold rule** (rarely changes; it fixes a base rule that is clearly wrong for a class).
   Every candidate rule (the adaptive ``mean * factor`` rule over :data:`MEAN_FACTORS`, fixed
   fractions of the maximum :data:`FIXED_THRESHOLDS`) is scored on the reviewed images by
   ``objective = hits + mean best IoU`` of its top box (hits: IoU >= 0.5 with a reviewed box). The
   best one replaces the base rule only if it localises at least :data:`MIN_EXTRA_HITS` more
   reviewed images with no lower mean IoU and beats the base objective by :data:`MIN_GAIN`, *and*
   the selection survives leave-one-out: choosing the rule without each reviewed image in turn
   must localise more held-out images than the base does. Five images are few: on the
   raccoon-kangaroo set (100 draws of 5 reviewed images per class), the former one-hit margin
   without leave-one-out changed the default's rule often enough to lose 0.020 CorLoc on the
   other images on average (0.21 in the worst draw).
2. **Box correction** (:class:`camcore.boxes.correction.BoxCorrection`): a class's boxes are often
   biased the same way in every image (too wide where animals stand together, too high where the
   map stops at the head). For each reviewed image, the top box of the chosen rule is matched to
   the reviewed box it overlaps most; the log width and height ratios and the vertical centre
   offset (in box heights) are averaged with a prior of :data:`PRIOR_IMAGES` images of "no
   correction" (``sum / (n + PRIOR_IMAGES)``): the correction is shrunk toward identity with few
   reviews and approaches the observed bias with many. The horizontal offset is left at 0
   (photographs are as likely mirrored). A correction is kept only when it survives
   leave-one-out (:func:`correction_loo`): each reviewed image's top box, corrected by the
   correction fitted without that image, must localise the reviewed images better (hits + mean
   IoU) than the uncorrected top boxes. Where the top box often covers a group of small objects
   (aquarium's fish), the matched objects teach a shrink that misplaces the other images' boxes,
   and the more images are reviewed the stronger it grows: with 80 reviewed images the other
   images' CorLoc fell to 0.099 with the correction and is 0.181 with the check (README).
   Corrections go to
   ``result["extra"]["box_correction"]`` (see :func:`camcore.boxes.correction.corrections_from_extra`);
   :func:`apply` applies them.

3. **Review map** (:mod:`camcore.boxes.review_map`, fitted by :mod:`camcore.review_fit`), when
   the images' descriptor codes are given: a per-cell logistic map learned from the reviewed boxes
   on the codes and the class map. Stages 1-2 are run again on the reviewed images' *cross-fitted*
   review maps (each from a fit without that image), starting from :data:`REVIEW_MAP_RULE`
   instead of the raw maps' rule. The review map is adopted only when its top boxes localise at
   least as many reviewed (image, class) pairs as the plain calibration's, with a higher mean IoU
   (the review maps of the reviewed images are the cross-fitted ones, so the map never grades the
   images it was fitted on). Judged by hits + mean IoU together, a map that lost IoU for two more
   hits, or tied on hits, was adopted on 5 reviewed raccoon-kangaroo images and cost the other
   images up to 0.21 CorLoc. Measured with 20 reviewed images in total (5 draws,
   ``bench/quality.py --reviewed 20``; README): it moves every dev collection, most of all
   aquarium's small fish and the random-tag collection.

The result is a JSON-safe dict for ``BoxParams.from_dict`` (store it in
``model_versions.calibration``).

Typical use by the ``calibrate`` job::

    params = calibrate(maps_by_image, image_sizes, reviewed_boxes, base_params, codes_by_image=codes)
    boxes = apply(maps_by_image, image_sizes, params, codes_by_image=codes)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from camcore.boxes import BoxParams, boxes_from_maps, boxes_from_normalized, normalized_map
from camcore.boxes.agreement import EXTRA_KEY as AGREEMENT_KEY
from camcore.boxes.agreement import ProposalAgreement, agreement_from_extra, fit_agreement, proposal_support
from camcore.boxes.correction import EXTRA_KEY, BoxCorrection, corrections_from_extra
from camcore.boxes.review_map import EXTRA_KEY as REVIEW_KEY
from camcore.boxes.score import DEFAULT_SCORER, BoxScorer, box_features, fit_scorer
from camcore.boxes.score import SPEC_KEY as SCORER_KEY
from camcore.resolution import check_resolution, map_grids
from camcore.review_fit import cross_fitted_maps, fit_review_map, training_cells

__all__ = [
    "FIXED_THRESHOLDS",
    "MEAN_FACTORS",
    "MIN_EXTRA_HITS",
    "MIN_GAIN",
    "PRIOR_IMAGES",
    "REVIEW_MAP_RULE",
    "apply",
    "calibrate",
    "correction_loo",
    "fit_correction",
    "review_map_wins",
    "score_params",
]

MEAN_FACTORS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0)
FIXED_THRESHOLDS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)
MIN_GAIN = 0.05  # a rule must beat the base objective (hits + mean IoU) by this much ...
MIN_EXTRA_HITS = 2  # ... localise this many more reviewed images, with no lower mean IoU, and pass leave-one-out
#: The threshold rule review maps start from (stage 3); stages 1-2 may change it with their margins.
#: 0.5 of the maximum was best of 0.4 / 0.5 / 0.6 on every dev collection held out (chosen on the
#: others; 20 reviewed images, 5 draws): see the README.
REVIEW_MAP_RULE: dict[str, Any] = {"threshold": 0.5, "mean_factor": 1.0}
PRIOR_IMAGES = 10.0  # weight, in reviewed images, of the "no correction" prior on a class's box correction

Key = TypeVar("Key", bound=Hashable)  # an image key: an id in the jobs, an index in the benches
ReviewedBoxes = Mapping[Key, Sequence[tuple[int, Sequence[float]]]]


def _pair(size: Sequence[int]) -> tuple[int, int]:
    """An image size ``(width, height)`` as a tuple (one read back from JSON is a list)."""
    width, height = size
    return width, height


def _as_params(params: BoxParams | Mapping[str, Any] | None) -> BoxParams:
    if isinstance(params, BoxParams):
        return params
    return BoxParams.from_dict(params)


def _reviewed_by_class(reviewed: ReviewedBoxes[Key]) -> dict[int, dict[Key, Tensor]]:
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


def _top_box(params: BoxParams, norm: Tensor | None, image_size: tuple[int, int]) -> Tensor:
    """``Tensor[0 or 1, 4]``: the top box of one class's normalised map (``None``: no evidence)."""
    if norm is None:
        return torch.zeros(0, 4)
    return boxes_from_normalized(norm, image_size, params)[0][:1].float()


def _top_ious(
    params: BoxParams,
    norms: Mapping[Key, Tensor | None],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth: Mapping[Key, Tensor],
    correction: BoxCorrection | None = None,
) -> np.ndarray:
    """``[n]`` best IoU of each image's (corrected) top box with its reviewed boxes (0 = no box),
    in ``truth`` order."""
    out = []
    for key, gt in truth.items():
        size = _pair(image_sizes[key])
        top = _top_box(params, norms[key], size)
        if correction is not None:
            top = correction.apply(top, size)
        out.append(float(box_iou(top, gt).max()) if len(top) else 0.0)
    return np.asarray(out, dtype=np.float64)


def score_params(
    params: BoxParams,
    norms: Mapping[Key, Tensor | None],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth: Mapping[Key, Tensor],
) -> tuple[int, float]:
    """(hits, mean best IoU) of the top box of one class against ``truth`` (``Tensor[M, 4]`` per
    image), from the class's normalised working-grid maps ``norms`` (see
    :func:`camcore.boxes.normalized_map`; ``None`` = no evidence = a miss)."""
    ious = _top_ious(params, norms, image_sizes, truth)
    return int((ious >= 0.5).sum()), (float(ious.mean()) if len(ious) else 0.0)


def _rule_candidates() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [{"threshold": None, "mean_factor": f} for f in MEAN_FACTORS]
    return rules + [{"threshold": t} for t in FIXED_THRESHOLDS]


def _select_rule(cand: np.ndarray, base: np.ndarray, rows: np.ndarray) -> int | None:
    """Index of the best candidate on images ``rows`` (``cand[R, n]``, ``base[n]`` top-box IoUs),
    or ``None`` when none clears the margins of the module docstring."""
    if len(rows) == 0:
        return None
    c, b = cand[:, rows], base[rows]
    hits, iou = (c >= 0.5).sum(1), c.mean(1)
    base_hits, base_iou = int((b >= 0.5).sum()), float(b.mean())
    objective = hits + iou
    ok = (hits >= base_hits + MIN_EXTRA_HITS) & (iou >= base_iou - 1e-9) & (objective > base_hits + base_iou + MIN_GAIN + 1e-9)
    if not ok.any():
        return None
    return int(np.flatnonzero(ok)[np.argmax(objective[ok])])


def _choose_rule(
    base: BoxParams, norms: Mapping[Key, Tensor | None], image_sizes: Mapping[Key, tuple[int, int]], truth: Mapping[Key, Tensor]
) -> tuple[dict[str, Any] | None, int]:
    """(the rule that replaces the base one, or ``None``; leave-one-out hits gain of the selection)."""
    rules = _rule_candidates()
    base_ious = _top_ious(base, norms, image_sizes, truth)
    cand = np.stack([_top_ious(replace(base, **rule), norms, image_sizes, truth) for rule in rules])
    n = len(base_ious)
    chosen = _select_rule(cand, base_ious, np.arange(n))
    if chosen is None:
        return None, 0
    loo_gain = 0
    for k in range(n):
        pick = _select_rule(cand, base_ious, np.delete(np.arange(n), k))
        held_out = cand[pick, k] if pick is not None else base_ious[k]
        loo_gain += int(held_out >= 0.5) - int(base_ious[k] >= 0.5)
    return (rules[chosen] if loo_gain >= 1 else None), loo_gain


def _correction_sample(params: BoxParams, norm: Tensor | None, image_size: tuple[int, int],
                       truth: Tensor) -> tuple[Tensor, tuple[float, float, float] | None]:
    """``(top box Tensor[0 or 1, 4] xyxy pixels, sample)``: the sample is the log width and height
    ratios and the vertical centre offset (in box heights) from the top box to the reviewed box of
    ``truth[M, 4]`` it overlaps most, or ``None`` when it overlaps none (or there is no box)."""
    top = _top_box(params, norm, image_size)
    if not len(top):
        return top, None
    ious = box_iou(top, truth)[0]
    j = int(ious.argmax())
    if float(ious[j]) <= 0.0:  # the top box is elsewhere: its size says nothing about this object
        return top, None
    (x1, y1, x2, y2), (g1, h1, g2, h2) = top[0].tolist(), truth[j].tolist()
    w, h = max(x2 - x1, 1e-6), max(y2 - y1, 1e-6)
    return top, (math.log((g2 - g1) / w), math.log((h2 - h1) / h), ((h1 + h2) - (y1 + y2)) / 2 / h)


def _correction_of(samples: Sequence[tuple[float, float, float]], prior_images: float) -> BoxCorrection:
    """The correction averaging ``samples`` with ``prior_images`` images of "no correction"."""
    if not samples:
        return BoxCorrection()
    log_w, log_h, shift_y = np.asarray(samples).sum(0) / (len(samples) + prior_images)
    bound = math.log(4.0)
    return BoxCorrection(
        width=round(math.exp(float(np.clip(log_w, -bound, bound))), 4),
        height=round(math.exp(float(np.clip(log_h, -bound, bound))), 4),
        shift_y=round(float(np.clip(shift_y, -1.0, 1.0)), 4),
    )


def _check_prior(prior_images: float) -> None:
    if prior_images < 0:
        raise ValueError(f"prior_images must be >= 0, got {prior_images}")


def fit_correction(
    params: BoxParams,
    norms: Mapping[Key, Tensor | None],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth: Mapping[Key, Tensor],
    *,
    prior_images: float = PRIOR_IMAGES,
) -> tuple[BoxCorrection, int]:
    """One class's box correction from its reviewed images (see the module docstring, stage 2).

    Args:
        params: the class's params (already resolved, see :meth:`BoxParams.for_class`).
        norms: image key -> normalised working-grid map of the class (``None``: no evidence).
        image_sizes: image key -> (width, height) in pixels.
        truth: image key -> reviewed boxes ``Tensor[M, 4]`` xyxy pixels of the class.
        prior_images: weight of the identity prior, in images (>= 0).

    Returns:
        (the correction, the number of images it was fitted on: those whose top box overlaps a
        reviewed box).
    """
    _check_prior(prior_images)
    return _fitted(_correction_samples(params, norms, image_sizes, truth), prior_images)


def correction_loo(
    params: BoxParams,
    norms: Mapping[Key, Tensor | None],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth: Mapping[Key, Tensor],
    *,
    prior_images: float = PRIOR_IMAGES,
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out check of a class's box correction (arguments as :func:`fit_correction`).

    Returns:
        ``(uncorrected[n], held_out[n])`` in ``truth`` order: each reviewed image's best IoU with
        its reviewed boxes of its top box as boxed, and of that box corrected by the correction
        fitted on the other images (0: no box). Each image is boxed once; a held-out correction is
        an average of the other images' samples, so the check costs no more boxing than the fit.
    """
    _check_prior(prior_images)
    return _held_out_ious(_correction_samples(params, norms, image_sizes, truth), image_sizes, truth, prior_images)


Found = list[tuple[Tensor, tuple[float, float, float] | None]]  # per reviewed image: (top box, sample)


def _correction_samples(params: BoxParams, norms: Mapping[Key, Tensor | None], image_sizes: Mapping[Key, tuple[int, int]],
                        truth: Mapping[Key, Tensor]) -> Found:
    """:func:`_correction_sample` of every image of ``truth``, in its order (one boxing each)."""
    return [_correction_sample(params, norms[k], _pair(image_sizes[k]), gt) for k, gt in truth.items()]


def _fitted(found: Found, prior_images: float) -> tuple[BoxCorrection, int]:
    """(the correction of ``found``'s samples, how many there are): :func:`fit_correction`."""
    samples = [s for _, s in found if s is not None]
    return _correction_of(samples, prior_images), len(samples)


def _held_out_ious(found: Found, image_sizes: Mapping[Key, tuple[int, int]], truth: Mapping[Key, Tensor],
                   prior_images: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`correction_loo` from the images' top boxes and samples (``found``, in ``truth`` order)."""
    uncorrected, held_out = np.zeros(len(found)), np.zeros(len(found))
    for i, (key, (top, _)) in enumerate(zip(truth, found, strict=True)):
        if not len(top):
            continue
        others = [s for j, (_, s) in enumerate(found) if j != i and s is not None]
        uncorrected[i] = float(box_iou(top, truth[key]).max())
        corrected = _correction_of(others, prior_images).apply(top, _pair(image_sizes[key]))
        held_out[i] = float(box_iou(corrected, truth[key]).max())
    return uncorrected, held_out


def _ious_report(ious: np.ndarray) -> dict[str, Any]:
    """``{"hits", "mean_iou"}`` of top-box IoUs, for the calibration report."""
    return {"hits": int((ious >= 0.5).sum()), "mean_iou": round(float(ious.mean()), 4) if len(ious) else 0.0}


def _objective(ious: np.ndarray) -> float:
    """``hits + mean IoU`` of top-box IoUs (the calibration's objective; 0 for none)."""
    return float((ious >= 0.5).sum() + ious.mean()) if len(ious) else 0.0


def calibrate(
    maps_by_image: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
    reviewed_boxes: ReviewedBoxes[Key],
    base_params: BoxParams | Mapping[str, Any] | None = None,
    *,
    codes_by_image: Mapping[Key, Tensor] | None = None,
) -> dict[str, Any]:
    """Pick per-class threshold rules and box corrections from reviewed boxes, and a review map
    when the images' descriptor codes are given and it localises the reviewed images better.

    Args:
        maps_by_image: image key -> {class index: stored raw map ``Tensor[h, w]``} (e.g. decoded
            float16 ``.npy`` concept maps).
        image_sizes: image key -> (width, height) in pixels of the original image.
        reviewed_boxes: image key -> list of ``(class index, [x1, y1, x2, y2])`` accepted or
            corrected boxes in image pixels (a few per class; 5 is plenty).
        base_params: the params the maps were boxed with (``BoxParams`` or its dict; default
            ``BoxParams()``). Calibration starts from its global fields; its ``per_class`` entries
            and box corrections are replaced for the calibrated classes and kept for the others.
        codes_by_image: image key -> descriptor codes ``Tensor[d, h, w]`` on the maps' grid
            (:mod:`camcore.descriptor_basis`), at least for the reviewed images; ``None``: no
            review map is tried.

    Returns:
        ``BoxParams.to_dict()`` of the calibrated params (JSON-safe): rules in
        ``result["per_class"]``, corrections in ``result["extra"]["box_correction"]``, an adopted
        review map in ``result["extra"]["review_map"]``; ``result["extra"]["calibration"]``
        records for each class the number of images used, the base/chosen (hits, mean IoU) on
        them, the rule (or ``"base"``), its leave-one-out hits gain and the correction, and under
        ``"review_map"`` whether a review map was adopted and why (:func:`_review_report`), and
        under ``"resolution"`` the reviewed objects' size in map cells
        (:class:`camcore.resolution.ResolutionCheck`: whether they are too small for the maps' cells).

    Raises:
        ValueError: malformed reviewed boxes, or a reviewed image without a size.
    """
    params = _calibrate_params(maps_by_image, image_sizes, reviewed_boxes, base_params, codes_by_image=codes_by_image)
    params["extra"]["calibration"]["resolution"] = check_resolution(reviewed_boxes, image_sizes, map_grids(maps_by_image)).to_dict()
    return params


def _calibrate_params(
    maps_by_image: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
    reviewed_boxes: ReviewedBoxes[Key],
    base_params: BoxParams | Mapping[str, Any] | None,
    *,
    codes_by_image: Mapping[Key, Tensor] | None,
) -> dict[str, Any]:
    """:func:`calibrate` but the resolution check."""
    given = _as_params(base_params)
    truth_by_class = _reviewed_by_class(reviewed_boxes)
    for truth in truth_by_class.values():
        missing = [k for k in truth if k not in image_sizes]
        if missing:
            raise ValueError(f"no image size for reviewed images {missing!r}")
    plain = _calibrate_on(maps_by_image, image_sizes, truth_by_class, given)
    reviewed = {k for per_image in truth_by_class.values() for k in per_image if k in maps_by_image}
    with_codes = {k for k in reviewed if codes_by_image is not None and k in codes_by_image}
    if not reviewed or with_codes != reviewed:
        reason = "no descriptor codes for the reviewed images" if not with_codes else "some reviewed images have no descriptor codes"
        return _with_review_report(plain, {"adopted": False, "reason": reason})
    assert codes_by_image is not None
    full = fit_review_map(*training_cells(codes_by_image, maps_by_image, image_sizes, truth_by_class))
    if full is None:
        return _with_review_report(plain, {"adopted": False, "reason": "the reviewed boxes cover every cell or none"})
    learned_maps = cross_fitted_maps(codes_by_image, maps_by_image, image_sizes, truth_by_class)
    learned = _calibrate_on(learned_maps, image_sizes, truth_by_class, given, start_rule=REVIEW_MAP_RULE,
                            raw_maps=maps_by_image)
    before = _reviewed_top_ious(plain, maps_by_image, image_sizes, truth_by_class)
    after = _reviewed_top_ious(learned, learned_maps, image_sizes, truth_by_class)
    adopted = review_map_wins(before, after)
    report = {"adopted": bool(adopted), "images": len(reviewed), "pairs": len(before),
              "plain": {"hits": int((before >= 0.5).sum()), "mean_iou": round(float(before.mean()), 4)},
              "learned": {"hits": int((after >= 0.5).sum()), "mean_iou": round(float(after.mean()), 4)}}
    if not adopted:
        return _with_review_report(plain, report)
    out = _with_review_report(learned, report)
    out["extra"][REVIEW_KEY] = full.to_dict()
    return out


def review_map_wins(plain: np.ndarray, learned: np.ndarray) -> bool:
    """Whether the review map's top boxes (``learned[n]``, best IoU of each reviewed (image,
    class) pair, cross-fitted) beat the plain calibration's (``plain[n]``): no fewer pairs
    localised (IoU >= 0.5) and a higher mean IoU. Neither measure may get worse, as for a
    threshold rule: on 5 reviewed images two more hits bought with a lower mean IoU, or a tie in
    hits decided by a few thousandths of IoU, was noise that cost the other images."""
    if plain.shape != learned.shape or not len(plain):
        raise ValueError(f"need the same reviewed pairs on both sides, got {plain.shape} and {learned.shape}")
    return bool((learned >= 0.5).sum() >= (plain >= 0.5).sum() and learned.mean() > plain.mean() + 1e-9)


def _with_review_report(params: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    params["extra"]["calibration"]["review_map"] = report
    return params


def _reviewed_top_ious(
    params: Mapping[str, Any],
    maps_by_image: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth_by_class: Mapping[int, Mapping[Key, Tensor]],
) -> np.ndarray:
    """``[pairs]`` best IoU of each reviewed (image, class)'s corrected top box under ``params``
    (0: no box), over the pairs with a map: :func:`_top_ious` per class."""
    p = _as_params(params)
    corrections = corrections_from_extra(p.extra)
    out = [np.zeros(0)]
    for cls, per_image in sorted(truth_by_class.items()):
        resolved = p.for_class(cls)
        truth = {k: v for k, v in per_image.items() if cls in maps_by_image.get(k, {})}
        norms = {k: normalized_map(maps_by_image[k][cls], _pair(image_sizes[k]), resolved) for k in truth}
        out.append(_top_ious(resolved, norms, image_sizes, truth, corrections.get(cls)))
    return np.concatenate(out)


def _calibrate_on(
    maps_by_image: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth_by_class: Mapping[int, Mapping[Key, Tensor]],
    given: BoxParams,
    *,
    start_rule: Mapping[str, Any] | None = None,
    raw_maps: Mapping[Key, Mapping[int, Tensor]] | None = None,
) -> dict[str, Any]:
    """Rules, corrections, the box scorer and the proposal agreement fitted on ``maps_by_image``
    (raw or review maps).

    ``start_rule``: the threshold rule to start from instead of ``given``'s (review maps are new
    maps: ``given``'s rule was chosen for the raw ones). ``raw_maps``: the stored raw maps when
    ``maps_by_image`` are review maps (the GT-free proposals are made from the raw ones)."""
    previous = agreement_from_extra(given.extra)  # holds the GT-free params of an earlier calibration
    gt_free = dict(previous.proposals) if previous is not None else {k: v for k, v in given.to_dict().items() if k != "extra"}
    base_extra = {k: v for k, v in given.extra.items()
                  if k not in (EXTRA_KEY, "calibration", SCORER_KEY, REVIEW_KEY, AGREEMENT_KEY)}
    base = replace(given, per_class={}, extra=base_extra)
    if start_rule is not None:
        base = replace(base, **start_rule)
    uncalibrated = base
    base, collection_report = _collection_rule(base, maps_by_image, image_sizes, truth_by_class)
    per_class = dict(given.per_class)
    corrections = {str(c): corr.to_dict() for c, corr in corrections_from_extra(given.extra).items()}
    report: dict[str, Any] = {}
    for cls, truth in sorted(truth_by_class.items()):
        usable = {k: v for k, v in truth.items() if cls in maps_by_image.get(k, {})}
        if not usable:
            continue
        norms = {k: normalized_map(maps_by_image[k][cls], _pair(image_sizes[k]), base) for k in usable}
        # a class's own rule (chosen against the uncalibrated rule, as strict as ever) wins;
        # otherwise the collection's rule, unless it localises fewer of this class's images
        rule, loo_gain = _choose_rule(uncalibrated, norms, image_sizes, usable)
        if rule is not None:
            chosen = replace(base, **rule)
        else:
            chosen, rule = _class_base(base, uncalibrated, norms, image_sizes, usable)
        found = _correction_samples(chosen, norms, image_sizes, usable)  # boxed once for the fit and its check
        correction, fitted = _fitted(found, PRIOR_IMAGES)
        uncorrected, held_out = _held_out_ious(found, image_sizes, usable, PRIOR_IMAGES)
        declined = not correction.is_identity and _objective(held_out) <= _objective(uncorrected) + 1e-9
        checked = {**correction.to_dict(), "images": fitted, "declined": declined,
                   "leave_one_out": {"uncorrected": _ious_report(uncorrected), "corrected": _ious_report(held_out)}}
        if declined:
            correction = BoxCorrection()
        per_class.pop(str(cls), None)
        corrections.pop(str(cls), None)
        if rule is not None:
            per_class[str(cls)] = dict(rule)
        if not correction.is_identity:
            corrections[str(cls)] = correction.to_dict()
        base_ious = _top_ious(base, norms, image_sizes, usable)
        final = _top_ious(chosen, norms, image_sizes, usable, correction)
        report[str(cls)] = {
            "images": len(usable),
            "base": {"hits": int((base_ious >= 0.5).sum()), "mean_iou": round(float(base_ious.mean()), 4)},
            "chosen": {"hits": int((final >= 0.5).sum()), "mean_iou": round(float(final.mean()), 4)},
            "params": dict(rule) if rule is not None else "base",
            "rule_loo_hits_gain": loo_gain,
            "correction": checked,
        }
    extra = {**base_extra, "calibration": {**report, "collection": collection_report}}
    if corrections:
        extra[EXTRA_KEY] = corrections
    calibrated = replace(base, per_class=per_class, extra=extra)
    proposals = _reviewed_proposals(calibrated, maps_by_image, image_sizes, truth_by_class)
    scorer = _refit_scorer(proposals)
    extra["calibration"]["box_scorer"] = scorer.to_dict()
    if scorer.fitted_on:
        extra[SCORER_KEY] = scorer.to_dict()
        agreement = _fit_agreement(gt_free, scorer, proposals,
                                   maps_by_image if raw_maps is None else raw_maps, image_sizes)
        extra[AGREEMENT_KEY] = agreement.to_dict()
        extra["calibration"]["proposal_agreement"] = agreement.to_dict()
    return replace(calibrated, extra=extra).to_dict()


def _collection_rule(
    base: BoxParams,
    maps_by_image: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth_by_class: Mapping[int, Mapping[Key, Tensor]],
) -> tuple[BoxParams, dict[str, Any]]:
    """Stage 0: one threshold rule for every class, chosen on all reviewed (image, class) pairs
    pooled, with the margins and the leave-one-out check of :func:`_choose_rule`. Object size is
    mostly a property of the collection (cards on a table, fish behind glass, animals in the
    wild), and pooling lets 20 reviewed images in total decide it where 20 images over 26 classes
    could never decide a rule per class."""
    norms: dict[tuple[Key, int], Tensor | None] = {}
    sizes: dict[tuple[Key, int], tuple[int, int]] = {}
    truth: dict[tuple[Key, int], Tensor] = {}
    for cls, per_image in sorted(truth_by_class.items()):
        for key, boxes in per_image.items():
            if cls not in maps_by_image.get(key, {}):
                continue
            pair = (key, cls)
            width, height = image_sizes[key]
            sizes[pair] = (width, height)
            norms[pair] = normalized_map(maps_by_image[key][cls], sizes[pair], base)
            truth[pair] = boxes
    if not truth:
        return base, {"pairs": 0, "params": "base"}
    rule, loo_gain = _choose_rule(base, norms, sizes, truth)
    chosen = replace(base, **rule) if rule is not None else base
    before = _top_ious(base, norms, sizes, truth)
    after = _top_ious(chosen, norms, sizes, truth)
    return chosen, {
        "pairs": len(truth),
        "base": {"hits": int((before >= 0.5).sum()), "mean_iou": round(float(before.mean()), 4)},
        "chosen": {"hits": int((after >= 0.5).sum()), "mean_iou": round(float(after.mean()), 4)},
        "params": dict(rule) if rule is not None else "base",
        "rule_loo_hits_gain": loo_gain,
    }


def _rule_of(params: BoxParams) -> dict[str, Any]:
    return {"threshold": params.threshold, "mean_factor": params.mean_factor}


def _class_base(
    collection: BoxParams,
    uncalibrated: BoxParams,
    norms: Mapping[Key, Tensor | None],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth: Mapping[Key, Tensor],
) -> tuple[BoxParams, dict[str, Any] | None]:
    """A class keeps the uncalibrated rule when the collection's new rule localises fewer of its
    reviewed images (the collection's objects are small, this class's are not): returns the
    class's starting params and the per-class rule that keeps the old rule (``None``: none)."""
    if _rule_of(collection) == _rule_of(uncalibrated):
        return collection, None
    new_hits = int((_top_ious(collection, norms, image_sizes, truth) >= 0.5).sum())
    old_hits = int((_top_ious(uncalibrated, norms, image_sizes, truth) >= 0.5).sum())
    if old_hits > new_hits:
        return replace(collection, **_rule_of(uncalibrated)), _rule_of(uncalibrated)
    return collection, None


def _reviewed_proposals(
    params: BoxParams,
    maps_by_image: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth_by_class: Mapping[int, Mapping[Key, Tensor]],
) -> list[tuple[Key, int, Tensor, Tensor, Tensor]]:
    """The reviewed images' proposals under the calibrated ``params``: per (image, class) with
    boxes ``(key, class, boxes[M, 4] xyxy pixels, features[M, 4] (:func:`box_features`),
    right[M] bool)``; a proposal is right when it overlaps (IoU >= 0.5) a reviewed box of its class."""
    out: list[tuple[Key, int, Tensor, Tensor, Tensor]] = []
    corrections = corrections_from_extra(params.extra)
    for cls, per_image in sorted(truth_by_class.items()):
        p = params.for_class(cls)
        for key, boxes in per_image.items():
            if cls not in maps_by_image.get(key, {}):
                continue
            size = _pair(image_sizes[key])
            norm = normalized_map(maps_by_image[key][cls], size, p)
            if norm is None:
                continue
            b, s = boxes_from_normalized(norm, size, p)
            if cls in corrections:
                b = corrections[cls].apply(b, size)
            if not len(b):
                continue
            out.append((key, cls, b, box_features(norm, b, s, size), box_iou(b.float(), boxes.float()).amax(dim=1) >= 0.5))
    return out


def _refit_scorer(proposals: Sequence[tuple[Key, int, Tensor, Tensor, Tensor]]) -> BoxScorer:
    """The box scorer refitted on the reviewed images' proposals (:func:`_reviewed_proposals`)."""
    if not proposals:
        return DEFAULT_SCORER
    return fit_scorer(torch.cat([f for *_, f, _ in proposals]), torch.cat([r for *_, r in proposals]))


def _fit_agreement(
    gt_free: Mapping[str, Any],
    scorer: BoxScorer,
    proposals: Sequence[tuple[Key, int, Tensor, Tensor, Tensor]],
    raw_maps: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
) -> ProposalAgreement:
    """The agreement with the GT-free proposals (:mod:`camcore.boxes.agreement`), its Platt slope
    and bias fitted on the reviewed images' proposals; their supports come from the raw maps."""
    agreement = ProposalAgreement(dict(gt_free))
    if not proposals:
        return agreement
    gt_free_params = agreement.proposal_params()
    scores, supports, right = [], [], []
    for key, cls, boxes, features, ok in proposals:
        size = _pair(image_sizes[key])
        scores.append(scorer(features))
        supports.append(proposal_support(boxes, raw_maps[key][cls], size, gt_free_params.for_class(cls)))
        right.append(ok)
    return fit_agreement(gt_free, torch.cat(scores), torch.cat(supports), torch.cat(right))


def apply(
    maps_by_image: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
    params: BoxParams | Mapping[str, Any],
    *,
    class_scores: Mapping[Key, Tensor | Mapping[int, float]] | None = None,
    codes_by_image: Mapping[Key, Tensor] | None = None,
) -> dict[Key, tuple[Tensor, Tensor, Tensor]]:
    """Recompute every image's boxes with (calibrated) params, no model pass: the review map
    (``params.extra["review_map"]``, for images whose ``codes_by_image`` are given), per-class
    rules, then per-class box corrections (``params.extra["box_correction"]``), then class-aware NMS.

    Returns:
        image key -> ``(boxes[N, 4] xyxy pixels, scores[N], labels[N])`` as
        :func:`camcore.boxes.boxes_from_maps` gives them.
    """
    p = _as_params(params)
    corrections_from_extra(p.extra)  # a malformed stored correction fails here, with its message
    out: dict[Key, tuple[Tensor, Tensor, Tensor]] = {}
    for key, maps in maps_by_image.items():
        if key not in image_sizes:
            raise ValueError(f"no image size for image {key!r}")
        cs = None if class_scores is None else class_scores.get(key)
        codes = None if codes_by_image is None else codes_by_image.get(key)
        out[key] = boxes_from_maps(maps, _pair(image_sizes[key]), p, class_scores=cs, codes=codes)
    return out
