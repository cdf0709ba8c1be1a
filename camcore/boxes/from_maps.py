"""Boxes of an image from its maps: the whole box rule applied, with no model pass.

Per class map: upsampled to the working grid (longest side ``params.working_size``, the image's
aspect), normalised, boxed by the rule ``params.mode`` (:mod:`camcore.boxes.rules`) at the resolved
threshold, scaled by ``box_scale`` and the class's calibrated correction
(:mod:`camcore.boxes.correction`), scored (:mod:`camcore.boxes.score`); then class-aware NMS over
the image. A review map learned from reviewed boxes (:mod:`camcore.boxes.review_map`) replaces
each map first when the image's descriptor codes are given. Stored maps go through the same
function, so boxes can be recomputed from them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from camcore.boxes.agreement import agreement_from_extra, proposal_support
from camcore.boxes.components import nms, normalize_map, upsample_map, working_shape
from camcore.boxes.correction import corrections_from_extra
from camcore.boxes.params import BoxParams
from camcore.boxes.review_map import review_map_from_extra
from camcore.boxes.rules import box_rule, boxes_from_normalized
from camcore.boxes.score import score_boxes, scorer_from_extra

__all__ = ["boxes_from_maps", "normalized_map"]


def boxes_from_maps(
    maps: Mapping[int, Tensor],
    image_size: tuple[int, int],
    params: BoxParams,
    *,
    class_scores: Mapping[int, float] | Tensor | None = None,
    codes: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes of one image from its stored low-resolution maps, with no model pass.

    Args:
        maps: class index -> raw map ``Tensor[h, w]`` (any device; float).
        image_size: (width, height) of the original image in pixels.
        params: box rule and thresholds.
        class_scores: optional per-class probability (mapping or ``Tensor[K]``) for maps of
            classes that are predicted rather than tagged; box scores are multiplied by it.
        codes: the image's descriptor codes ``Tensor[d, h, w]`` on the maps' grid, or ``None``.
            With a review map in ``params.extra["review_map"]`` (:mod:`camcore.boxes.review_map`),
            each map is replaced by its review map first; without codes the maps are used as they are.

    Box scores are :mod:`camcore.boxes.score` probabilities that the box is right (IoU >= 0.5 with
    an object of its class), from the map alone; ``params.extra["box_scorer"]`` holds a scorer
    refitted on reviewed boxes, if any, and ``params.extra["proposal_agreement"]`` (after review,
    :mod:`camcore.boxes.agreement`) combines each score with the support of the image's GT-free
    proposals, made from the raw maps.

    Returns:
        ``(boxes[N, 4] xyxy float pixels clipped to the image, scores[N], labels[N] long)`` on the
        CPU, sorted by decreasing score, after class-aware NMS.
    """
    for cls in maps:
        box_rule(params.for_class(int(cls)).mode)  # an unknown mode fails before any work
    grid = working_shape(image_size, params.working_size)
    corrections = corrections_from_extra(params.extra)  # per-class box corrections from calibration
    scorer = scorer_from_extra(params.extra)  # the default box scorer, or one refitted on reviews
    agreement = agreement_from_extra(params.extra)  # after review: support of the GT-free proposals
    gt_free = agreement.proposal_params() if agreement is not None else None
    raw_maps = maps
    review = review_map_from_extra(params.extra) if codes is not None else None
    if review is not None:
        assert codes is not None  # a review map is read only for an image with codes
        maps = {cls: review.apply(codes.float().cpu(), cam.detach().float().cpu()) for cls, cam in maps.items()}
    all_boxes: list[Tensor] = []
    all_scores: list[Tensor] = []
    all_labels: list[Tensor] = []
    for cls, cam in maps.items():
        p = params.for_class(int(cls))
        norm = normalize_map(upsample_map(cam.detach().float().cpu(), grid), p.normalize)
        if norm is None:
            continue
        b, s = boxes_from_normalized(norm, image_size, p)
        if int(cls) in corrections:
            b = corrections[int(cls)].apply(b, image_size)
        s = score_boxes(scorer, norm, b, s, image_size)  # probability that the box is right
        if agreement is not None and gt_free is not None:
            proposal_params = gt_free.for_class(int(cls))
            # the raw map's normalised grid is ``norm`` itself when no review map replaced it
            same_norm = review is None and (proposal_params.working_size, proposal_params.normalize) == (params.working_size, p.normalize)
            support = proposal_support(b, raw_maps[cls], image_size, proposal_params, normalized=norm if same_norm else None)
            s = agreement.combine(s, support)
        if class_scores is not None:
            s = s * float(class_scores[int(cls)])
        all_boxes.append(b.float())
        all_scores.append(s.float())
        all_labels.append(torch.full((b.shape[0],), int(cls), dtype=torch.long))
    if not all_boxes:
        return torch.zeros((0, 4)), torch.zeros((0,)), torch.zeros((0,), dtype=torch.long)
    boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
    if params.nms_iou < 1.0 and labels.unique().numel() < labels.numel():  # NMS only acts within a class
        keep = nms(boxes, scores, labels, params.nms_iou)
    else:
        keep = torch.argsort(scores, descending=True, stable=True)
    return boxes[keep], scores[keep], labels[keep]


def normalized_map(cam: Tensor, image_size: tuple[int, int], params: BoxParams) -> Tensor | None:
    """A stored raw map ``Tensor[h, w]`` upsampled to the working grid and normalised (``None``:
    no evidence). Calibration caches this to try many params per map."""
    grid = working_shape(image_size, params.working_size)
    return normalize_map(upsample_map(cam.detach().float().cpu(), grid), params.normalize)
