"""The default box scorer's bench (bench/box_scorer.py): the proposals it fits on are the product's,
each collection weighs the same, and leave-one-collection-out never fits on the held-out photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camcore.boxes import BoxParams, boxes_from_maps
from camcore.boxes.score import DEFAULT_SCORER, FEATURES
from camcore.localizer import ImageResult
from tests.bench.bench_modules import bench_module

b = bench_module("box_scorer.py")


def _blobs(centres: list[tuple[float, float, float]], shape: tuple[int, int] = (14, 14)) -> torch.Tensor:
    """A map with one Gaussian blob per ``(row, col, height)``."""
    rows, cols = torch.meshgrid(torch.arange(shape[0], dtype=torch.float32), torch.arange(shape[1], dtype=torch.float32), indexing="ij")
    out = torch.zeros(shape)
    for r, c, h in centres:
        out += h * torch.exp(-((rows - r) ** 2 + (cols - c) ** 2) / 3.0)
    return out


def _synthetic(n: int, rng: np.random.Generator, *, informative: int = 0, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, len(FEATURES)))
    p = 1 / (1 + np.exp(-(2.5 * x[:, informative] * (-1 if flip else 1))))
    return x, rng.random(n) < p


def test_the_bench_proposes_the_products_boxes_with_the_products_scores() -> None:
    maps = {0: _blobs([(4, 4, 1.0), (10, 10, 0.7)]), 2: _blobs([(3, 10, 0.9), (4, 11, 0.5)])}
    result = ImageResult(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long), maps,
                         torch.tensor([0.9, 0.1, 0.8]), (640, 480))
    params = BoxParams()
    boxes, scores, labels, signals = b.image_proposals(result, params)
    want_boxes, want_scores, want_labels = boxes_from_maps(maps, (640, 480), params)
    assert len(boxes) >= 3  # two blobs of class 0, at least one of class 2
    assert torch.equal(labels, want_labels)
    assert torch.allclose(boxes, want_boxes) and torch.allclose(scores, want_scores)
    assert torch.allclose(DEFAULT_SCORER(signals), scores)  # the signals are what the score was made of


def test_fit_pooled_weighs_each_collection_the_same_and_finds_the_signal() -> None:
    rng = np.random.default_rng(0)
    small = b.Proposals("small", "small", *_synthetic(60, rng, informative=0))
    large = b.Proposals("large", "large", *_synthetic(600, rng, informative=2))
    fitted = b.fit_pooled([small, large])
    assert fitted.weights[0] > 0.3 and fitted.weights[2] > 0.3  # both collections' signals count
    merged = b.Proposals("merged", "merged", np.r_[small.signals, large.signals], np.r_[small.right, large.right])
    per_box = b.fit_pooled([merged])  # one collection: each box weighs the same, the large one decides
    assert fitted.weights[0] > per_box.weights[0] + 0.2, (fitted, per_box)
    # every box of the large collection twice: the same collection, the same fit
    doubled = b.Proposals("large", "large", np.r_[large.signals, large.signals], np.r_[large.right, large.right])
    again = b.fit_pooled([small, doubled])
    assert np.allclose(fitted.weights, again.weights, atol=1e-6) and abs(fitted.bias - again.bias) < 1e-6
    held = b.Proposals("held", "held", *_synthetic(400, rng, informative=0))
    assert b.ranking(b.fit_pooled([small]), held) > 0.8
    with pytest.raises(ValueError, match="nothing to fit"):
        b.fit_pooled([b.Proposals("all right", "all right", small.signals, np.ones(60, dtype=bool))])
    with pytest.raises(ValueError, match="no proposals"):
        b.fit_pooled([b.Proposals("empty", "empty", np.zeros((0, len(FEATURES))), np.zeros(0, dtype=bool))])


def test_leave_one_out_never_fits_on_a_copy_of_the_held_out_photos() -> None:
    rng = np.random.default_rng(1)
    photos = b.Proposals("photos", "photos", *_synthetic(300, rng, informative=0))
    # a random-tag copy of the same photos whose signal runs the other way: were it fitted on when
    # "photos" is held out, it would pull the fit against them
    copy = b.Proposals("photos-random", "photos", *_synthetic(3000, rng, informative=0, flip=True))
    other = b.Proposals("other", "other", *_synthetic(300, rng, informative=0))
    held_out = b.leave_one_out([photos, copy, other])
    assert held_out["photos"] == pytest.approx(b.ranking(b.fit_pooled([other]), photos))
    assert held_out["photos"] > 0.8
    assert held_out["other"] == pytest.approx(b.ranking(b.fit_pooled([photos, copy]), other))
