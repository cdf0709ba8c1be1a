"""Box score: an estimate of the probability that a proposed box is right (IoU >= 0.5 with an object).

Every box gets four signals computed from its class map alone (no ground truth):

- ``mass``: the box rule's own score, the activation mass of the box's component relative to the
  image's main component for that class (1.0 for the main one);
- ``log_area``: natural log of the box area as a fraction of the image area;
- ``contrast``: mean of the normalised map (0..1) inside the box minus the mean outside it;
- ``border``: share of the box's four sides lying on the image border (0, 0.25, ..., 1).

The score is a logistic model of them, ``sigmoid(w . x + b)``. :data:`DEFAULT_SCORER` was fitted on
the proposals of three development collections with different object sizes (large single animals,
playing cards, crowded small fish; each collection weighted the same) and checked
leave-one-collection-out: fitted on two, the AUROC on the third was 0.60 / 0.80 / 0.75, against
0.61 / 0.61 / 0.44 for the former score (mass ratio x class probability). Collections differ in
how many proposals are right, so the default's probabilities are only a first estimate;
:func:`fit_scorer` refits the model on reviewed proposals (accepted or matched = right), shrunk
toward the default, which fixes the level for the collection at hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["DEFAULT_SCORER", "FEATURES", "SPEC_KEY", "BoxScorer", "box_features", "fit_scorer", "shrunk_logistic"]

FEATURES: tuple[str, ...] = ("mass", "log_area", "contrast", "border")
SPEC_KEY = "box_scorer"  # BoxParams.extra key of a refitted scorer


@dataclass(frozen=True)
class BoxScorer:
    """``probability = sigmoid(weights . features + bias)`` over :data:`FEATURES`.

    Attributes:
        weights: one weight per feature, in :data:`FEATURES` order.
        bias: the intercept.
        fitted_on: number of reviewed boxes it was refitted on (0: the default).
    """

    weights: tuple[float, ...]
    bias: float
    fitted_on: int = 0

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES):
            raise ValueError(f"a box scorer needs {len(FEATURES)} weights ({', '.join(FEATURES)}), got {len(self.weights)}")
        if not all(math.isfinite(float(w)) for w in (*self.weights, self.bias)):
            raise ValueError(f"box scorer weights must be finite, got {self.weights}, {self.bias}")

    def __call__(self, features: Tensor) -> Tensor:
        """``features[N, 4]`` -> probabilities ``Tensor[N]`` in (0, 1)."""
        if features.dim() != 2 or features.shape[1] != len(FEATURES):
            raise ValueError(f"features must be Tensor[N, {len(FEATURES)}], got {tuple(features.shape)}")
        w = torch.tensor(self.weights, dtype=torch.float32)
        return torch.sigmoid(features.float() @ w + float(self.bias))

    def to_dict(self) -> dict[str, Any]:
        return {"weights": [round(float(w), 6) for w in self.weights], "bias": round(float(self.bias), 6),
                "fitted_on": int(self.fitted_on)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BoxScorer:
        try:
            return cls(tuple(float(w) for w in data["weights"]), float(data["bias"]), int(data.get("fitted_on", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed box scorer {dict(data)!r}: {exc}") from None


DEFAULT_SCORER = BoxScorer(weights=(3.435, -0.331, 0.941, -3.521), bias=-3.776)


def scorer_from_extra(extra: Mapping[str, Any] | None) -> BoxScorer:
    """The scorer stored in ``BoxParams.extra`` (a refitted one), else :data:`DEFAULT_SCORER`."""
    raw = (extra or {}).get(SPEC_KEY)
    return BoxScorer.from_dict(raw) if raw else DEFAULT_SCORER


def box_features(norm: Tensor, boxes: Tensor, rule_scores: Tensor, image_size: tuple[int, int]) -> Tensor:
    """GT-free signals of one class's boxes.

    Args:
        norm: ``Tensor[H, W]`` the class's normalised map (0..1) on the working grid.
        boxes: ``Tensor[M, 4]`` xyxy pixels of the original image.
        rule_scores: ``Tensor[M]`` the box rule's scores (mass relative to the main component).
        image_size: (width, height) in pixels.

    Returns:
        ``Tensor[M, 4]`` float32, columns in :data:`FEATURES` order.
    """
    m = boxes.shape[0]
    if m == 0:
        return torch.zeros((0, len(FEATURES)))
    if rule_scores.shape != (m,):
        raise ValueError(f"{tuple(rule_scores.shape)} rule scores for {m} boxes")
    width, height = float(image_size[0]), float(image_size[1])
    grid_h, grid_w = norm.shape
    # numpy, not torch: sums over one small map start no intra-op thread team (on a busy machine
    # a team's start-up cost more than the sums)
    values = norm.detach().cpu().numpy().astype(np.float64, copy=False)
    total = float(values.sum())
    cells = grid_h * grid_w
    xyxy = boxes.detach().cpu().numpy().astype(np.float64, copy=False).reshape(m, 4)
    out = np.zeros((m, len(FEATURES)), dtype=np.float32)
    out[:, 0] = rule_scores.detach().cpu().numpy()
    for k, (x1, y1, x2, y2) in enumerate(xyxy.tolist()):
        c1, c2 = int(x1 / width * grid_w), max(int(x1 / width * grid_w) + 1, int(round(x2 / width * grid_w)))
        r1, r2 = int(y1 / height * grid_h), max(int(y1 / height * grid_h) + 1, int(round(y2 / height * grid_h)))
        inside = values[r1:r2, c1:c2]
        n_in = inside.size
        sum_in = float(inside.sum())
        mean_in = sum_in / max(n_in, 1)
        mean_out = (total - sum_in) / (cells - n_in) if cells > n_in else 0.0
        area = max((x2 - x1) * (y2 - y1) / (width * height), 1e-6)
        border = (x1 <= 1.0) + (y1 <= 1.0) + (x2 >= width - 1.0) + (y2 >= height - 1.0)
        out[k, 1:] = (math.log(area), mean_in - mean_out, border / 4.0)
    return torch.from_numpy(out)


def fit_scorer(
    features: Tensor,
    correct: Tensor,
    *,
    prior: BoxScorer = DEFAULT_SCORER,
    prior_strength: float = 10.0,
) -> BoxScorer:
    """Refit the scorer on reviewed proposals, shrunk toward ``prior``.

    Maximises the logistic likelihood of ``correct`` minus ``prior_strength / 2 * |theta -
    theta_prior|^2`` over weights and bias (Newton's method): with few reviewed boxes the result
    stays near the prior and mostly moves the bias (the collection's share of right boxes); with
    many it follows the data.

    Args:
        features: ``Tensor[N, 4]`` from :func:`box_features` of the reviewed images' proposals.
        correct: ``Tensor[N]`` bool or 0/1: the proposal was accepted, or overlaps (IoU >= 0.5) a
            reviewed box of its class.
        prior: the scorer to shrink toward.
        prior_strength: weight of the prior (> 0).

    Returns:
        The refitted :class:`BoxScorer` (``fitted_on = N``); ``prior`` when ``N == 0``.
    """
    if prior_strength <= 0:
        raise ValueError(f"prior_strength must be > 0, got {prior_strength}")
    if features.dim() != 2 or features.shape[1] != len(FEATURES):
        raise ValueError(f"features must be Tensor[N, {len(FEATURES)}], got {tuple(features.shape)}")
    if correct.shape != (features.shape[0],):
        raise ValueError(f"{tuple(correct.shape)} labels for {features.shape[0]} proposals")
    n = features.shape[0]
    if n == 0:
        return prior
    x = np.c_[features.double().numpy(), np.ones(n)]
    theta = shrunk_logistic(x, correct.double().numpy(), np.array([*prior.weights, prior.bias], dtype=np.float64), prior_strength)
    return BoxScorer(tuple(float(v) for v in theta[:-1]), float(theta[-1]), n)


def shrunk_logistic(x: np.ndarray, y: np.ndarray, theta0: np.ndarray, prior_strength: float,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """Logistic regression shrunk toward ``theta0``: maximises the (weighted) log-likelihood of ``y`` minus
    ``prior_strength / 2 * |theta - theta0|^2`` (Newton's method, each step halved until the
    objective rises: a full step from ``theta0`` can overshoot where the inputs span tens of logit
    units, and without the check the fit ran off to a slope of 25 where the optimum was 0.3).

    Args:
        x: ``[N, P]`` design matrix (with its intercept column).
        y: ``[N]`` 0/1 labels.
        theta0: ``[P]`` the prior's coefficients (also the starting point).
        prior_strength: weight of the prior (> 0).
        weights: ``[N]`` weight of each row's likelihood (default: 1 each).

    Returns:
        ``[P]`` the fitted coefficients.
    """
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != y.shape:
        raise ValueError(f"{w.shape} weights for {y.shape} labels")

    def objective(t: np.ndarray) -> float:
        z = x @ t
        return float(np.sum(w * (y * z - np.logaddexp(0.0, z))) - prior_strength / 2 * np.sum((t - theta0) ** 2))

    theta = theta0.astype(np.float64).copy()
    current = objective(theta)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ theta, -500, 500)))
        grad = x.T @ (w * (p - y)) + prior_strength * (theta - theta0)
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + prior_strength * np.eye(len(theta))
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-10:
            candidate = theta - scale * step
            value = objective(candidate)
            if value >= current - 1e-12:
                break
            scale /= 2
        else:
            break
        theta, current = candidate, value
        if float(np.abs(scale * step).max()) < 1e-8:
            break
    return theta


def score_boxes(
    scorer: BoxScorer, norm: Tensor, boxes: Tensor, rule_scores: Tensor, image_size: tuple[int, int]
) -> Tensor:
    """``Tensor[M]`` probabilities of one class's boxes (see :func:`box_features`)."""
    if boxes.shape[0] == 0:
        return torch.zeros((0,))
    return scorer(box_features(norm, boxes, rule_scores, image_size))

