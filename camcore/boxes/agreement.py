"""Agreement with the GT-free proposals: the box score once boxes come from reviewed knowledge.

After review, an image's boxes come from calibrated rules, box corrections and a review map
learnt from a few reviewed images. The map signals of :mod:`camcore.boxes.score` rank those boxes
poorly (measured with 20 reviewed images, 5 draws, on the other images of each dev collection:
box AUROC 0.661 / 0.788 / 0.507 on aquarium / playing_cards / raccoon-kangaroo, against 0.809 /
0.803 / 0.643 for the GT-free boxes before review). Two independent estimates that a box is right
agree far better: the learnt box's own score and the score of the GT-free proposal it overlaps,
weighted by that overlap. A learnt box that no GT-free proposal supports is suspect; one that
sits on a confident GT-free proposal is likely right.

The score after review is therefore

    p = sigmoid(slope * logit(s * a) + bias),  a = max_j IoU(box, g_j) * score(g_j)

with ``s`` the refitted map score of the box, ``g_j`` the image's GT-free proposals of the same
class (the params before calibration on the raw map, the default scorer), and ``slope``, ``bias``
a monotone (Platt) recalibration fitted on the reviewed images' proposals and shrunk toward the
identity, so that ``p`` stays an estimate of the probability that the box is right. The product
has no constant tuned to a collection: with the same draws it ranks the other images' boxes at
AUROC 0.690 / 0.792 / 0.693 (``bench/quality.py --reviewed 20 --seeds 5``; README).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from camcore.boxes.components import normalize_map, upsample_map, working_shape
from camcore.boxes.params import BoxParams
from camcore.boxes.rules import boxes_from_normalized
from camcore.boxes.score import DEFAULT_SCORER, score_boxes, shrunk_logistic

__all__ = ["EXTRA_KEY", "ProposalAgreement", "agreement_from_extra", "fit_agreement", "proposal_support"]

EXTRA_KEY = "proposal_agreement"  # BoxParams.extra key
_EPS = 1e-12
"""Floor (and 1 - ceiling) of ``score * support`` before its logit, small enough to keep the order
of the products of small scores and supports (at 1e-6, 44% of aquarium's boxes after 20 reviewed
images shared one score)."""


@dataclass(frozen=True)
class ProposalAgreement:
    """How the score after review combines a box's score with the GT-free proposals' support.

    Attributes:
        proposals: ``BoxParams.to_dict()`` (no ``extra``) of the GT-free proposals: the params
            the maps were boxed with before any calibration.
        slope: Platt slope on ``logit(score * support)`` (> 0: the ranking is kept).
        bias: Platt intercept.
        fitted_on: number of reviewed proposals the slope and bias were fitted on.
    """

    proposals: Mapping[str, Any]
    slope: float = 1.0
    bias: float = 0.0
    fitted_on: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slope) and self.slope > 0 and math.isfinite(self.bias)):
            raise ValueError(f"agreement slope must be finite and > 0 and bias finite, got {self.slope}, {self.bias}")
        if self.proposals.get("extra"):
            raise ValueError("the GT-free proposal params of an agreement cannot hold learnt extras")
        BoxParams.from_dict(self.proposals)  # malformed params fail here, with their message

    def combine(self, scores: Tensor, support: Tensor) -> Tensor:
        """``Tensor[M]`` probabilities from the boxes' scores and supports (both ``Tensor[M]`` in [0, 1])."""
        joint = (scores.double() * support.double()).clamp(_EPS, 1 - _EPS)  # float64: small products stay apart
        return torch.sigmoid(self.slope * torch.logit(joint) + self.bias).float()

    def proposal_params(self) -> BoxParams:
        """The params of the GT-free proposals."""
        return BoxParams.from_dict(self.proposals)

    def to_dict(self) -> dict[str, Any]:
        return {"proposals": dict(self.proposals), "slope": round(float(self.slope), 6), "bias": round(float(self.bias), 6),
                "fitted_on": int(self.fitted_on)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProposalAgreement:
        try:
            return cls(dict(data["proposals"]), float(data["slope"]), float(data["bias"]), int(data.get("fitted_on", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed proposal agreement {dict(data)!r}: {exc}") from None


def agreement_from_extra(extra: Mapping[str, Any] | None) -> ProposalAgreement | None:
    """The agreement stored in ``BoxParams.extra`` by calibration, or ``None`` (scores as they are)."""
    raw = (extra or {}).get(EXTRA_KEY)
    return ProposalAgreement.from_dict(raw) if raw else None


def proposal_support(
    boxes: Tensor, raw_map: Tensor, image_size: tuple[int, int], params: BoxParams, *, normalized: Tensor | None = None
) -> Tensor:
    """How strongly one class's GT-free proposals support each of its boxes.

    Args:
        boxes: ``Tensor[M, 4]`` xyxy pixels, the class's boxes after review.
        raw_map: ``Tensor[h, w]`` the class's stored raw map (not a review map).
        image_size: (width, height) in pixels.
        params: the GT-free proposal params resolved for the class
            (:meth:`ProposalAgreement.proposal_params`, then :meth:`BoxParams.for_class`).
        normalized: ``raw_map`` already upsampled to the working grid of ``params.working_size``
            and normalised by ``params.normalize`` (``Tensor[H, W]``), when the caller has it;
            ``None``: computed here.

    Returns:
        ``Tensor[M]``: ``max_j IoU(box, g_j) * score(g_j)`` over the proposals ``g_j`` (0 when none
        overlaps or the map has no evidence).
    """
    if boxes.shape[0] == 0:
        return torch.zeros((0,))
    p = params
    norm = normalized if normalized is not None else normalize_map(
        upsample_map(raw_map.detach().float().cpu(), working_shape(image_size, p.working_size)), p.normalize)
    if norm is None:
        return torch.zeros((boxes.shape[0],))
    proposals, mass = boxes_from_normalized(norm, image_size, p)
    if proposals.shape[0] == 0:
        return torch.zeros((boxes.shape[0],))
    scores = score_boxes(DEFAULT_SCORER, norm, proposals, mass, image_size)
    return (box_iou(boxes.float(), proposals.float()) * scores.float()[None, :]).amax(dim=1)


def fit_agreement(
    proposals: Mapping[str, Any], scores: Tensor, support: Tensor, correct: Tensor, *, prior_strength: float = 10.0
) -> ProposalAgreement:
    """Fit the Platt slope and bias on reviewed proposals, shrunk toward the identity.

    Args:
        proposals: the GT-free proposal params (``BoxParams.to_dict()`` without ``extra``).
        scores: ``Tensor[N]`` the reviewed images' proposals' map scores (refitted scorer).
        support: ``Tensor[N]`` their :func:`proposal_support`.
        correct: ``Tensor[N]`` bool: the proposal overlaps (IoU >= 0.5) a reviewed box of its class.
        prior_strength: weight of the identity prior (> 0).

    Returns:
        The agreement; slope 1 and bias 0 when ``N == 0``. The slope is kept > 0 (a fit that
        would invert the ranking is refused: slope 1).
    """
    if prior_strength <= 0:
        raise ValueError(f"prior_strength must be > 0, got {prior_strength}")
    n = int(scores.shape[0])
    if support.shape != (n,) or correct.shape != (n,):
        raise ValueError(f"{n} scores, {tuple(support.shape)} supports, {tuple(correct.shape)} labels")
    if n == 0:
        return ProposalAgreement(dict(proposals))
    joint = (scores.double() * support.double()).clamp(_EPS, 1 - _EPS)
    x = np.c_[torch.logit(joint).numpy(), np.ones(n)]
    slope, bias = shrunk_logistic(x, correct.double().numpy(), np.array([1.0, 0.0]), prior_strength)
    if slope <= 1e-3:  # the reviewed proposals would invert the ranking: keep the identity
        return ProposalAgreement(dict(proposals), fitted_on=n)
    return ProposalAgreement(dict(proposals), float(slope), float(bias), n)
