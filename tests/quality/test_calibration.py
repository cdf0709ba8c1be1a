"""Calibration from a few reviewed boxes picks better per-class thresholds (synthetic maps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from camcore.calibration import apply, calibrate
from camcore.pipeline import BoxParams
from quality_synth import pyramid_map

SIZE = (240, 180)
LEVELS = {0: 0.7, 1: 0.15}  # class 0: the object is the map's peak; class 1: nearly all its support


def _collection(n: int, seed: int) -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(seed)
    maps, sizes, truth = {}, {}, {}
    for i in range(n):
        cls = i % 2
        w, h = rng.uniform(40, 90), rng.uniform(40, 80)
        x0, y0 = rng.uniform(20, SIZE[0] - w - 20), rng.uniform(20, SIZE[1] - h - 20)
        m, box = pyramid_map((x0, y0, x0 + w, y0 + h), LEVELS[cls], SIZE)
        key = f"img{seed}-{i}"
        maps[key], sizes[key], truth[key] = {cls: m}, SIZE, (cls, list(box))
    return maps, sizes, truth


def _hits(pred: dict, truth: dict) -> int:
    hits = 0
    for key, (cls, box) in truth.items():
        boxes, _, labels = pred[key]
        top = boxes[labels == cls][:1]
        hits += bool(len(top)) and float(box_iou(top, torch.tensor([box]))[0, 0]) >= 0.5
    return hits


def test_calibration_picks_per_class_thresholds_that_beat_the_default_on_other_images() -> None:
    maps, sizes, truth = _collection(10, seed=1)  # 5 reviewed images per class
    held_maps, held_sizes, held_truth = _collection(30, seed=2)
    base = BoxParams()
    params = calibrate(maps, sizes, {k: [v] for k, v in truth.items()}, base)
    json.dumps(params)  # storable as model_versions.calibration
    calibrated = BoxParams.from_dict(params)
    assert "0" in calibrated.per_class  # the base misses class 0 (its object is only the map's peak)
    # class 0's object is the top 30% of its map, class 1's nearly all of it: thresholds must differ
    t0 = calibrated.for_class(0).resolved_threshold(held_maps["img2-0"][0])
    t1 = calibrated.for_class(1).resolved_threshold(held_maps["img2-1"][1])
    assert t0 > t1
    base_hits = _hits(apply(held_maps, held_sizes, base), held_truth)
    cal_hits = _hits(apply(held_maps, held_sizes, params), held_truth)
    assert cal_hits > base_hits
    assert cal_hits >= 27  # 90% of the held-out images
    report = params["extra"]["calibration"]
    assert report["0"]["images"] == 5 and report["0"]["chosen"]["hits"] >= report["0"]["base"]["hits"]


def test_calibration_is_stable_when_the_base_is_already_calibrated() -> None:
    maps, sizes, truth = _collection(6, seed=3)
    reviews = {k: [v] for k, v in truth.items()}
    first = calibrate(maps, sizes, reviews)
    again = calibrate(maps, sizes, reviews, BoxParams.from_dict(first))
    assert again["per_class"] == first["per_class"]  # nothing beats the chosen params: ties keep the base
    assert [r["params"] for r in again["extra"]["calibration"].values()] == ["base", "base"]


def test_calibration_rejects_bad_reviews() -> None:
    maps, sizes, _ = _collection(2, seed=4)
    key = next(iter(maps))
    with pytest.raises(ValueError, match="valid xyxy"):
        calibrate(maps, sizes, {key: [(0, [10, 10, 5, 20])]})
    with pytest.raises(ValueError, match="class, \\[x1"):
        calibrate(maps, sizes, {key: [(0,)]})
    with pytest.raises(ValueError, match="no image size"):
        calibrate(maps, {}, {key: [(0, [1, 1, 5, 5])]})
    with pytest.raises(ValueError, match="per_class"):
        BoxParams(per_class={"0": {"method": "cam"}})
