"""The score after review: agreement of a box with the image's GT-free proposals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from camcore.boxes import BoxParams, boxes_from_maps, normalized_map
from camcore.boxes.agreement import EXTRA_KEY, ProposalAgreement, agreement_from_extra, fit_agreement, proposal_support
from camcore.boxes.score import SPEC_KEY
from camcore.calibration import apply, calibrate
from tests.camcore.quality.synth import pyramid_map

SIZE = (240, 180)
GT_FREE = {k: v for k, v in BoxParams().to_dict().items() if k != "extra"}


def _two_blobs() -> torch.Tensor:
    """A map with a strong blob on the left and a weaker one on the right (24 x 24 grid)."""
    left, _ = pyramid_map((20.0, 40.0, 90.0, 120.0), 0.5, SIZE)
    right, _ = pyramid_map((150.0, 40.0, 220.0, 120.0), 0.5, SIZE)
    return torch.maximum(left, 0.6 * right)


def test_round_trip_and_bad_values() -> None:
    agreement = ProposalAgreement(GT_FREE, slope=1.3, bias=-0.4, fitted_on=12)
    stored = json.loads(json.dumps(agreement.to_dict()))
    assert ProposalAgreement.from_dict(stored) == agreement
    assert agreement_from_extra({EXTRA_KEY: stored}) == agreement
    assert agreement_from_extra({}) is None and agreement_from_extra(None) is None
    with pytest.raises(ValueError, match="slope"):
        ProposalAgreement(GT_FREE, slope=0.0)
    with pytest.raises(ValueError, match="slope"):
        ProposalAgreement(GT_FREE, slope=float("nan"))
    with pytest.raises(ValueError, match="learnt extras"):
        ProposalAgreement({**GT_FREE, "extra": {SPEC_KEY: {}}})
    with pytest.raises(ValueError, match="malformed proposal agreement"):
        ProposalAgreement.from_dict({"slope": 1.0})
    with pytest.raises(ValueError):
        ProposalAgreement({**GT_FREE, "mode": "no-such-rule", "threshold": "high"})


def test_support_is_the_overlap_times_the_proposal_score() -> None:
    cam = _two_blobs()
    params = BoxParams()
    proposals, scores, _ = boxes_from_maps({0: cam}, SIZE, params)
    assert len(proposals) == 2
    far = torch.tensor([[0.0, 150.0, 30.0, 180.0]])  # nowhere near either blob
    boxes = torch.cat([proposals, far])
    support = proposal_support(boxes, cam, SIZE, params)
    # a proposal supports itself with its own (default) score; the empty corner has no support
    assert torch.allclose(support[:2], scores, atol=1e-5)
    assert float(support[2]) == 0.0
    half = proposals[:1].clone()
    half[0, 2] = (half[0, 0] + half[0, 2]) / 2  # half of the strong proposal: IoU 0.5
    assert float(proposal_support(half, cam, SIZE, params)[0]) == pytest.approx(0.5 * float(scores[0]), rel=1e-4)
    assert proposal_support(torch.zeros((0, 4)), cam, SIZE, params).shape == (0,)
    assert float(proposal_support(far, torch.zeros(24, 24), SIZE, params)[0]) == 0.0  # no evidence, no support
    # the caller's normalised map gives the same support as the raw map (boxes_from_maps passes
    # its own when no review map replaced the raw one)
    norm = normalized_map(cam, SIZE, params)
    assert torch.equal(proposal_support(boxes, cam, SIZE, params, normalized=norm), support)
    # ... and it is what is read: another map's normalised grid gives that map's support
    other = normalized_map(torch.flip(cam, dims=(1,)), SIZE, params)
    assert not torch.equal(proposal_support(boxes, cam, SIZE, params, normalized=other), support)


def test_combine_keeps_the_order_of_score_times_support() -> None:
    agreement = ProposalAgreement(GT_FREE, slope=0.8, bias=0.3)
    scores = torch.tensor([0.9, 0.9, 0.5, 0.2])
    support = torch.tensor([0.8, 0.1, 0.8, 0.0])
    p = agreement.combine(scores, support)
    assert torch.all((p > 0) & (p < 1))
    assert torch.equal(torch.argsort(p, descending=True), torch.argsort(scores * support, descending=True))
    identity = ProposalAgreement(GT_FREE).combine(scores, support)
    assert torch.allclose(identity[:3], scores[:3] * support[:3], atol=1e-5)
    # small scores times small supports (aquarium's boxes after review) keep their order: no ties
    small = torch.tensor([1e-2, 3e-3, 1e-3, 4e-4, 1e-4])
    tiny = agreement.combine(small, small)
    assert tiny.dtype == torch.float32 and len(torch.unique(tiny)) == 5
    assert torch.equal(torch.argsort(tiny, descending=True), torch.arange(5))


def test_fit_moves_the_level_to_the_reviewed_share_of_right_boxes() -> None:
    rng = np.random.default_rng(0)
    scores = torch.tensor(rng.uniform(0.2, 0.95, 200), dtype=torch.float32)
    support = torch.tensor(rng.uniform(0.0, 1.0, 200), dtype=torch.float32)
    joint = (scores * support).numpy()
    right = torch.tensor(rng.uniform(0, 1, 200) < np.clip(joint * 1.6, 0, 1))  # more often right than the product says
    fitted = fit_agreement(GT_FREE, scores, support, right)
    assert fitted.fitted_on == 200 and fitted.slope > 0
    predicted = fitted.combine(scores, support).mean()
    assert abs(float(predicted) - float(right.float().mean())) < 0.05  # calibrated on what it was fitted on
    assert float(ProposalAgreement(GT_FREE).combine(scores, support).mean()) < float(right.float().mean()) - 0.05
    # no reviewed proposals: the identity; inverted evidence never flips the ranking
    assert fit_agreement(GT_FREE, torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.bool)) == ProposalAgreement(GT_FREE)
    inverted = fit_agreement(GT_FREE, scores, support, torch.tensor(joint < np.median(joint)), prior_strength=0.01)
    assert inverted.slope > 0
    with pytest.raises(ValueError, match="labels"):
        fit_agreement(GT_FREE, scores, support[:3], right)
    with pytest.raises(ValueError, match="prior_strength"):
        fit_agreement(GT_FREE, scores, support, right, prior_strength=0)


def _reviewed_collection(n: int) -> tuple[dict, dict, dict]:
    """Maps with a true object (strong blob) and a distractor (weaker blob) in every image; the
    reviewer's box is a little larger than the strong blob's default box."""
    rng = np.random.default_rng(3)
    maps, sizes, reviews = {}, {}, {}
    for i in range(n):
        w, h = rng.uniform(45, 70), rng.uniform(45, 70)
        x0, y0 = rng.uniform(10, 100 - w), rng.uniform(10, SIZE[1] - h - 10)
        obj, box = pyramid_map((x0, y0, x0 + w, y0 + h), 0.5, SIZE)
        dx0 = rng.uniform(130, 230 - w)
        other, _ = pyramid_map((dx0, y0, dx0 + w, y0 + h), 0.5, SIZE)
        key = f"img{i}"
        maps[key], sizes[key] = {0: torch.maximum(obj, float(rng.uniform(0.5, 0.8)) * other)}, SIZE
        reviews[key] = [(0, [box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4])]
    return maps, sizes, reviews


def test_calibration_stores_the_agreement_with_the_gt_free_params_and_apply_uses_it() -> None:
    maps, sizes, reviews = _reviewed_collection(12)
    base = BoxParams()
    fitted = calibrate(maps, sizes, reviews, base)
    agreement = agreement_from_extra(fitted["extra"])
    assert agreement is not None and agreement.fitted_on >= 12
    assert agreement.proposals == GT_FREE  # the GT-free proposals are the uncalibrated params'
    assert fitted["extra"]["calibration"]["proposal_agreement"] == agreement.to_dict()
    # a second calibration from the calibrated params keeps the first's GT-free params
    again = calibrate(maps, sizes, reviews, BoxParams.from_dict(fitted))
    assert again["extra"][EXTRA_KEY] == fitted["extra"][EXTRA_KEY]
    # apply scores with the agreement: the same boxes, scores from score x support, recalibrated
    key = "img0"
    with_agreement = apply({key: maps[key]}, sizes, fitted)[key]
    without = {**fitted, "extra": {k: v for k, v in fitted["extra"].items() if k != EXTRA_KEY}}
    plain = apply({key: maps[key]}, sizes, without)[key]
    assert with_agreement[0].shape == plain[0].shape
    order = torch.argsort(plain[1], descending=True)
    support = proposal_support(plain[0][order], maps[key][0], SIZE, agreement.proposal_params())
    expected = agreement.combine(plain[1][order], support)
    assert torch.allclose(torch.sort(with_agreement[1], descending=True).values, torch.sort(expected, descending=True).values, atol=1e-5)


# logit(score x support) of 42 proposals of 20 reviewed aquarium photos and whether each was right
_AQUARIUM_LOGITS = [-4.5, -6.3, -9.4, -9.7, -4.5, -7.1, -9.7, -5.3, -8.0, -6.9, -7.7, -9.9, -8.4, -8.7, -11.6, -6.1, -7.4,
                    -3.9, -4.2, -7.0, -8.0, -2.9, -5.7, -5.7, -8.5, -16.7, -5.3, -6.1, -7.6, -6.9, -6.3, -6.3, -6.3, -4.5,
                    -4.8, -5.3, -5.7, -3.2, -8.9, -4.1, -5.8, -4.6]
_AQUARIUM_RIGHT = {0, 3, 19, 29, 37, 39, 41}


def test_the_shrunk_fit_reaches_the_optimum_where_full_newton_steps_overshoot() -> None:
    from scipy.optimize import minimize

    from camcore.boxes.score import shrunk_logistic

    x = np.c_[_AQUARIUM_LOGITS, np.ones(len(_AQUARIUM_LOGITS))]
    y = np.array([i in _AQUARIUM_RIGHT for i in range(len(_AQUARIUM_LOGITS))], dtype=float)
    prior = np.array([1.0, 0.0])

    def objective(t: np.ndarray) -> float:
        z = x @ t
        return float(np.sum(y * z - np.logaddexp(0.0, z)) - 5.0 * np.sum((t - prior) ** 2))

    fitted = shrunk_logistic(x, y, prior, 10.0)
    best = minimize(lambda t: -objective(t), prior).x
    assert np.allclose(fitted, best, atol=1e-3), (fitted, best)
    assert 0 < fitted[0] < 1  # the reviewed proposals' ranking is weaker than the identity says, not 25 times stronger
    agreement = fit_agreement(GT_FREE, torch.tensor(1 / (1 + np.exp(-x[:, 0])), dtype=torch.float32), torch.ones(len(y)),
                              torch.tensor(y > 0))
    assert agreement.slope == pytest.approx(fitted[0], abs=0.02)


def test_the_shrunk_fit_weighs_rows_as_if_repeated() -> None:
    from camcore.boxes.score import shrunk_logistic

    x = np.c_[_AQUARIUM_LOGITS, np.ones(len(_AQUARIUM_LOGITS))]
    y = np.array([i in _AQUARIUM_RIGHT for i in range(len(_AQUARIUM_LOGITS))], dtype=float)
    counts = np.arange(len(y)) % 3 + 1  # row i counted 1, 2 or 3 times
    prior = np.array([1.0, 0.0])
    weighted = shrunk_logistic(x, y, prior, 10.0, weights=counts.astype(float))
    repeated = shrunk_logistic(np.repeat(x, counts, axis=0), np.repeat(y, counts), prior, 10.0)
    assert np.allclose(weighted, repeated, atol=1e-6), (weighted, repeated)
    assert not np.allclose(weighted, shrunk_logistic(x, y, prior, 10.0), atol=1e-3)  # the weights matter here
    with pytest.raises(ValueError, match="weights"):
        shrunk_logistic(x, y, prior, 10.0, weights=np.ones(3))
