"""Calibration from a few reviewed boxes: per-class thresholds and box corrections (synthetic maps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from camcore.boxes import BoxParams, normalized_map
from camcore.boxes.correction import BoxCorrection, corrections_from_extra
from camcore.calibration import PRIOR_IMAGES, apply, calibrate, correction_loo, fit_correction
from tests.camcore.quality.synth import pyramid_map

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


@pytest.mark.slow  # searches the box rule over generated maps
def test_calibration_picks_per_class_thresholds_that_beat_the_default_on_other_images() -> None:
    maps, sizes, truth = _collection(10, seed=1)  # 5 reviewed images per class
    held_maps, held_sizes, held_truth = _collection(30, seed=2)
    base = BoxParams()
    params = calibrate(maps, sizes, {k: [v] for k, v in truth.items()}, base)
    json.dumps(params)  # storable as model_versions.calibration
    calibrated = BoxParams.from_dict(params)
    # the base misses class 0 (its object is only the map's peak): the collection's rule or class 0's changes
    assert "0" in calibrated.per_class or (calibrated.threshold, calibrated.mean_factor) != (base.threshold, base.mean_factor)
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


def test_calibration_is_idempotent_when_the_base_is_already_calibrated() -> None:
    maps, sizes, truth = _collection(6, seed=3)
    reviews = {k: [v] for k, v in truth.items()}
    first = calibrate(maps, sizes, reviews)
    again = calibrate(maps, sizes, reviews, BoxParams.from_dict(first))
    # calibration always starts from the uncalibrated params: a second run from the same reviews
    # neither compounds the corrections nor drifts the rules
    assert again["per_class"] == first["per_class"]
    assert again["extra"].get("box_correction") == first["extra"].get("box_correction")
    assert again["extra"]["calibration"] == first["extra"]["calibration"]


def _biased_collection(n: int, seed: int, width: float, shift_y: float, noise: float) -> tuple[dict, dict, dict]:
    """Maps whose default top box is ``1 / width`` times wider than the object and ``shift_y`` box
    heights too high (times a log-normal per-image ``noise``): the reviewed box is the default's
    top box with that bias undone."""
    rng = np.random.default_rng(seed)
    maps, sizes, truth = {}, {}, {}
    base = BoxParams()
    for i in range(n):
        w, h = rng.uniform(50, 110), rng.uniform(40, 80)
        x0, y0 = rng.uniform(10, SIZE[0] - w - 10), rng.uniform(10, SIZE[1] - h - 10)
        m, _ = pyramid_map((x0, y0, x0 + w, y0 + h), 0.5, SIZE)
        key = f"biased{seed}-{i}"
        top = apply({key: {0: m}}, {key: SIZE}, base)[key][0][0]
        bw, bh = float(top[2] - top[0]), float(top[3] - top[1])
        cx, cy = float(top[0] + top[2]) / 2, float(top[1] + top[3]) / 2 + shift_y * bh
        tw, th = bw * width * float(np.exp(rng.normal(0, noise))), bh * float(np.exp(rng.normal(0, noise)))
        maps[key], sizes[key], truth[key] = {0: m}, SIZE, (0, [cx - tw / 2, cy - th / 2, cx + tw / 2, cy + th / 2])
    return maps, sizes, truth


def _mean_iou(pred: dict, truth: dict) -> float:
    ious = [float(box_iou(pred[k][0][:1], torch.tensor([box]))[0, 0]) if len(pred[k][0]) else 0.0 for k, (_, box) in truth.items()]
    return float(np.mean(ious))


def test_calibration_fixes_boxes_that_are_systematically_too_wide() -> None:
    maps, sizes, truth = _biased_collection(5, seed=5, width=0.45, shift_y=0.06, noise=0.05)
    held_maps, held_sizes, held_truth = _biased_collection(30, seed=6, width=0.45, shift_y=0.06, noise=0.05)
    params = calibrate(maps, sizes, {k: [v] for k, v in truth.items()})
    json.dumps(params)
    corr = corrections_from_extra(BoxParams.from_dict(params).extra)[0]
    assert corr.width < corr.height and corr.shift_x == 0.0 and corr.shift_y > 0.0
    checked = params["extra"]["calibration"]["0"]["correction"]
    assert checked["declined"] is False  # it also localises each reviewed image fitted without it
    loo = checked["leave_one_out"]
    assert loo["corrected"]["hits"] >= loo["uncorrected"]["hits"] and loo["corrected"]["mean_iou"] > loo["uncorrected"]["mean_iou"]
    base_pred, cal_pred = apply(held_maps, held_sizes, BoxParams()), apply(held_maps, held_sizes, params)
    assert _hits(base_pred, held_truth) == 0  # IoU about 0.45: every default box misses
    assert _hits(cal_pred, held_truth) >= 27
    assert _mean_iou(cal_pred, held_truth) > _mean_iou(base_pred, held_truth) + 0.1


def test_box_correction_is_shrunk_toward_identity_with_few_reviews() -> None:
    maps, sizes, truth = _biased_collection(5, seed=5, width=0.6, shift_y=0.06, noise=0.02)
    held_maps, held_sizes, held_truth = _biased_collection(30, seed=6, width=0.6, shift_y=0.06, noise=0.02)
    params = calibrate(maps, sizes, {k: [v] for k, v in truth.items()})
    assert params["per_class"] == {}  # the default rule already localises every reviewed image
    corr = corrections_from_extra(params["extra"])[0]
    keep = 5 / (5 + PRIOR_IMAGES)  # 5 reviews against a prior worth PRIOR_IMAGES images of "no correction"
    assert corr.width == pytest.approx(0.6 ** keep, abs=0.02) and corr.height == pytest.approx(1.0, abs=0.02)
    assert corr.shift_y == pytest.approx(0.06 * keep, abs=0.01)
    before = _mean_iou(apply(held_maps, held_sizes, BoxParams()), held_truth)
    assert _mean_iou(apply(held_maps, held_sizes, params), held_truth) > before + 0.05


def test_calibration_leaves_unbiased_classes_almost_alone() -> None:
    maps, sizes, truth = _biased_collection(5, seed=7, width=1.0, shift_y=0.0, noise=0.15)
    held_maps, held_sizes, held_truth = _biased_collection(30, seed=8, width=1.0, shift_y=0.0, noise=0.15)
    params = calibrate(maps, sizes, {k: [v] for k, v in truth.items()})
    assert params["per_class"] == {}  # no rule beats the base by two reviewed images
    corr = corrections_from_extra(params["extra"]).get(0)
    assert corr is None or (abs(np.log(corr.width)) < 0.06 and abs(np.log(corr.height)) < 0.06 and abs(corr.shift_y) < 0.02)
    assert _hits(apply(held_maps, held_sizes, params), held_truth) >= _hits(apply(held_maps, held_sizes, BoxParams()), held_truth) - 1


def test_apply_corrects_every_box_of_the_class_before_nms() -> None:
    maps, sizes, _ = _collection(4, seed=9)
    base = BoxParams()
    params = base.to_dict() | {"extra": {"box_correction": {"0": {"width": 0.5, "height": 2.0, "shift_y": 0.1}}}}
    plain, corrected = apply(maps, sizes, base), apply(maps, sizes, params)
    for key, m in maps.items():
        cls = next(iter(m))
        expected = plain[key][0] if cls == 1 else BoxCorrection(width=0.5, height=2.0, shift_y=0.1).apply(plain[key][0], SIZE)
        assert torch.allclose(corrected[key][0], expected, atol=1e-4)
        # the score is the corrected box's own estimate (camcore.boxes.score), the class is unchanged
        assert torch.equal(corrected[key][2], plain[key][2])
        assert bool(((corrected[key][1] > 0) & (corrected[key][1] < 1)).all())


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


def _groups_and_singles(groups: int, singles: int, seed: int) -> tuple[dict, dict, dict]:
    """Maps whose default top box covers either two objects side by side (``groups`` images: the
    reviewed boxes are its left and right 45%, as fish swimming together) or exactly one object
    (``singles``: the reviewed box is the top box). Returns (maps, sizes, reviewed boxes)."""
    rng = np.random.default_rng(seed)
    maps, sizes, reviewed = {}, {}, {}
    for i in range(groups + singles):
        w, h = rng.uniform(60, 110), rng.uniform(40, 80)
        x0, y0 = rng.uniform(10, SIZE[0] - w - 10), rng.uniform(10, SIZE[1] - h - 10)
        m, _ = pyramid_map((x0, y0, x0 + w, y0 + h), 0.5, SIZE)
        key = f"group{seed}-{i}"
        x1, y1, x2, y2 = apply({key: {0: m}}, {key: SIZE}, BoxParams())[key][0][0].tolist()
        side = 0.45 * (x2 - x1)
        boxes = [[x1, y1, x1 + side, y2], [x2 - side, y1, x2, y2]] if i < groups else [[x1, y1, x2, y2]]
        maps[key], sizes[key], reviewed[key] = {0: m}, SIZE, [(0, b) for b in boxes]
    return maps, sizes, reviewed


def test_a_box_correction_that_fails_leave_one_out_is_declined() -> None:
    """Top boxes around two objects teach a shrink toward the pair's middle, between the objects;
    applied to the other images it shrinks the right single-object boxes too. Fitted on all the
    reviewed images it looks like a correction; left out in turn, each image is localised worse,
    so it is declined and reported."""
    maps, sizes, reviewed = _groups_and_singles(12, 6, seed=11)
    params = calibrate(maps, sizes, reviewed)
    checked = params["extra"]["calibration"]["0"]["correction"]
    assert checked["images"] == 18 and checked["width"] < 0.8  # the fit alone would shrink every box
    assert checked["declined"] is True and "box_correction" not in params["extra"], checked
    loo = checked["leave_one_out"]
    assert loo["corrected"]["hits"] + loo["corrected"]["mean_iou"] <= loo["uncorrected"]["hits"] + loo["uncorrected"]["mean_iou"]
    held_maps, held_sizes, held = _groups_and_singles(12, 6, seed=12)
    truth = {k: (0, v[0][1]) for k, v in held.items() if len(v) == 1}  # the single objects
    fitted = BoxParams.from_dict(params)
    forced = params | {"extra": {**params["extra"], "box_correction": {"0": {"width": checked["width"], "height": checked["height"],
                                                                               "shift_y": checked["shift_y"]}}}}
    assert _mean_iou(apply(held_maps, held_sizes, fitted), truth) > _mean_iou(apply(held_maps, held_sizes, forced), truth) + 0.1


def test_correction_loo_holds_each_image_out_of_its_own_correction() -> None:
    maps, sizes, truth = _biased_collection(4, seed=13, width=0.5, shift_y=0.0, noise=0.0)
    base = BoxParams()
    norms = {k: normalized_map(m[0], SIZE, base) for k, m in maps.items()}
    boxes = {k: torch.tensor([v[1]]) for k, v in truth.items()}
    uncorrected, held_out = correction_loo(base, norms, sizes, boxes, prior_images=0.0)
    # with no prior and the same bias in every image, the others' correction undoes it exactly
    assert uncorrected.shape == held_out.shape == (4,)
    assert np.all(uncorrected < 0.55) and np.all(held_out > 0.98)
    # with one image only, the held-out correction is no correction
    one = {k: boxes[k] for k in list(boxes)[:1]}
    u1, h1 = correction_loo(base, norms, sizes, one, prior_images=0.0)
    assert h1[0] == pytest.approx(u1[0])
    assert fit_correction(base, norms, sizes, one, prior_images=0.0)[1] == 1
    with pytest.raises(ValueError, match="prior_images"):
        correction_loo(base, norms, sizes, boxes, prior_images=-1.0)
