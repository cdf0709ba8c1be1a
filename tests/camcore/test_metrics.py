"""Metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from camcore.metrics import (
    auroc,
    box_acc_table,
    box_correctness,
    coco_ap,
    corloc,
    max_box_acc_from_table,
    max_box_acc_v2,
    top_fraction_precision,
)


def _t(rows):  # type: ignore[no-untyped-def]
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def test_corloc_uses_the_top_box_per_image_and_class() -> None:
    gt = [
        (_t([[0, 0, 10, 10]]), torch.tensor([0])),
        (_t([[0, 0, 10, 10], [20, 20, 30, 30]]), torch.tensor([0, 1])),
        (_t([[5, 5, 15, 15]]), torch.tensor([1])),
    ]
    preds = [
        (_t([[0, 0, 10, 9], [50, 50, 60, 60]]), torch.tensor([0.9, 0.1]), torch.tensor([0, 0])),  # hit
        # class 0: top box misses (0.8) though a lower one hits; class 1 hits
        (_t([[40, 40, 50, 50], [0, 0, 10, 10], [20, 20, 30, 31]]), torch.tensor([0.8, 0.5, 0.7]), torch.tensor([0, 0, 1])),
        (_t([]), torch.tensor([]), torch.tensor([], dtype=torch.long)),  # no box: miss
    ]
    assert corloc(preds, gt) == pytest.approx(2 / 4)
    assert math.isnan(corloc([(_t([]), torch.tensor([]), torch.tensor([]))], [(_t([]), torch.tensor([]))]))
    with pytest.raises(ValueError):
        corloc(preds[:1], gt)


def test_max_box_acc_v2_perfect_and_shifted_maps() -> None:
    size = (100, 100)
    perfect = torch.zeros(10, 10)
    perfect[2:6, 3:8] = 1.0  # cells -> pixels [30, 20, 80, 60]
    gt = _t([[30, 20, 80, 60]])
    res = max_box_acc_v2([perfect], [gt], [size], working_size=100)
    assert res["max_box_acc_v2"] == pytest.approx(1.0) and res["n"] == 1
    assert set(res["per_iou"]) == {0.3, 0.5, 0.7}
    off = torch.zeros(10, 10)
    off[5:9, 0:3] = 1.0  # elsewhere: IoU 0 at every threshold
    res2 = max_box_acc_v2([perfect, off], [gt, gt], [size, size], working_size=100)
    assert res2["max_box_acc_v2"] == pytest.approx(0.5)
    # two blobs: all components count, so the second object is found too
    two = perfect.clone()
    two[7:9, 0:2] = 0.9
    assert max_box_acc_v2([two], [_t([[0, 70, 20, 90]])], [size], working_size=100)["per_iou"][0.7] == pytest.approx(1.0)
    empty = max_box_acc_v2([], [], [])
    assert empty["n"] == 0 and math.isnan(empty["max_box_acc_v2"])


def test_coco_ap_with_pycocotools() -> None:
    gt = [(_t([[0, 0, 10, 10]]), torch.tensor([0])), (_t([[10, 10, 50, 50]]), torch.tensor([1]))]
    perfect = [(g[0], torch.tensor([0.9]), g[1]) for g in gt]
    res = coco_ap(perfect, gt)
    assert res["AP"] == pytest.approx(1.0) and res["AP50"] == pytest.approx(1.0)
    wrong_class = [(g[0], torch.tensor([0.9]), 1 - g[1]) for g in gt]
    assert coco_ap(wrong_class, gt, num_classes=2)["AP50"] == pytest.approx(0.0)
    loose = [(_t([[0, 0, 10, 16]]), torch.tensor([0.9]), torch.tensor([0])), (gt[1][0], torch.tensor([0.8]), torch.tensor([1]))]
    res = coco_ap(loose, gt)
    assert res["AP50"] == pytest.approx(1.0) and res["AP"] < 1.0  # IoU 0.625 fails the stricter thresholds
    none = [(_t([]), torch.tensor([]), torch.tensor([], dtype=torch.long))] * 2
    assert coco_ap(none, gt) == {"AP": 0.0, "AP50": 0.0}
    assert coco_ap(none, [(_t([]), torch.tensor([], dtype=torch.long))] * 2) == {"AP": None, "AP50": None}


def test_coco_ap_per_class_from_the_same_evaluation() -> None:
    gt = [(_t([[0, 0, 10, 10]]), torch.tensor([0])), (_t([[10, 10, 50, 50]]), torch.tensor([1]))]
    # class 0 found exactly; class 1's only box lies elsewhere
    preds = [(gt[0][0], torch.tensor([0.9]), torch.tensor([0])), (_t([[60, 60, 90, 90]]), torch.tensor([0.8]), torch.tensor([1]))]
    res = coco_ap(preds, gt, per_class=True)
    assert res["per_class"][0] == {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)}
    assert res["per_class"][1] == {"AP": pytest.approx(0.0), "AP50": pytest.approx(0.0)}
    assert res["AP50"] == pytest.approx(0.5)  # the mean over the two categories
    assert "per_class" not in coco_ap(preds, gt)
    none = [(_t([]), torch.tensor([]), torch.tensor([], dtype=torch.long))] * 2
    assert coco_ap(none, gt, per_class=True)["per_class"] == {0: {"AP": 0.0, "AP50": 0.0}, 1: {"AP": 0.0, "AP50": 0.0}}


def test_box_acc_table_gives_max_box_acc_of_any_subset() -> None:
    size = (100, 100)
    hit = torch.zeros(10, 10)
    hit[2:6, 3:8] = 1.0
    miss = torch.zeros(10, 10)
    miss[5:9, 0:3] = 1.0
    gt = _t([[30, 20, 80, 60]])
    ts = [i / 10 for i in range(10)]
    table = box_acc_table([hit, miss, torch.zeros(4, 4)], [gt, gt, gt], [size] * 3, thresholds=ts, working_size=100)
    assert table.shape == (3, 10, 3) and table.dtype == bool
    assert table[0, 5].all() and not table[1].any() and not table[2].any()  # a flat map finds nothing
    assert max_box_acc_from_table(table[:1], thresholds=ts)["max_box_acc_v2"] == pytest.approx(1.0)
    assert max_box_acc_from_table(table, thresholds=ts)["max_box_acc_v2"] == pytest.approx(1 / 3)
    assert max_box_acc_from_table(table, thresholds=ts) == max_box_acc_v2(
        [hit, miss, torch.zeros(4, 4)], [gt, gt, gt], [size] * 3, thresholds=ts, working_size=100)
    assert math.isnan(max_box_acc_from_table(table[:0], thresholds=ts)["max_box_acc_v2"])
    with pytest.raises(ValueError, match="does not match"):
        max_box_acc_from_table(table)  # built with 10 thresholds, read with the default 100


def test_box_correctness_needs_the_same_class_and_image() -> None:
    gt = [(_t([[0, 0, 10, 10], [20, 20, 40, 40]]), torch.tensor([0, 1])), (_t([]), torch.tensor([], dtype=torch.long))]
    preds = [
        # right class and place; right place, wrong class; class 1 loose (IoU 0.25); class 1 exact
        (_t([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 60, 60], [20, 20, 40, 40]]),
         torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 1, 1, 1])),
        (_t([[0, 0, 10, 10]]), torch.tensor([0.5]), torch.tensor([0])),  # an image without ground truth
    ]
    scores, correct, labels = box_correctness(preds, gt)
    assert correct.tolist() == [True, False, False, True, False]
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    assert labels.tolist() == [0, 1, 1, 1, 0]
    assert box_correctness(preds, gt, iou_threshold=0.2)[1].tolist() == [True, False, True, True, False]
    empty = box_correctness([], [])
    assert len(empty[0]) == len(empty[1]) == len(empty[2]) == 0
    with pytest.raises(ValueError):
        box_correctness(preds[:1], gt)


def test_auroc_known_values_ties_and_empty_outcomes() -> None:
    assert auroc([0.9, 0.8, 0.7, 0.1], [True, True, False, False]) == pytest.approx(1.0)
    assert auroc([0.1, 0.2, 0.7, 0.9], [1, 1, 0, 0]) == pytest.approx(0.0)
    assert auroc([0.5] * 4, [1, 0, 1, 0]) == pytest.approx(0.5)
    # pairs (correct, wrong): (0.9, 0.5) 1, (0.9, 0.1) 1, (0.5, 0.5) 1/2, (0.5, 0.1) 1 -> 3.5 / 4
    assert auroc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.875)
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 40).astype(float)  # many ties
    c = rng.random(40) < 0.4
    pairs = [(a > b) + 0.5 * (a == b) for a in s[c] for b in s[~c]]
    assert auroc(s, c) == pytest.approx(sum(pairs) / len(pairs))
    assert math.isnan(auroc([0.3, 0.4], [True, True])) and math.isnan(auroc([], []))
    with pytest.raises(ValueError, match="NaN"):
        auroc([0.1, float("nan")], [1, 0])
    with pytest.raises(ValueError):
        auroc([0.1, 0.2], [1])


def test_top_fraction_precision_shares_ties_and_ignores_input_order() -> None:
    assert top_fraction_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert top_fraction_precision([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert top_fraction_precision([1.0] * 4, [1, 1, 0, 0]) == pytest.approx(0.5)  # no ranking at all
    # top 2: the wrong 0.9, then one of the two tied 0.5 (one right, one wrong) -> (0 + 1/2) / 2
    assert top_fraction_precision([0.9, 0.5, 0.5, 0.1], [0, 1, 0, 1]) == pytest.approx(0.25)
    assert top_fraction_precision([0.5, 0.1, 0.9, 0.5], [0, 1, 0, 1]) == pytest.approx(0.25)
    # three items: the top 1.5 -> (1 + 0.5 * 0) / 1.5
    assert top_fraction_precision([0.9, 0.5, 0.1], [1, 0, 0]) == pytest.approx(1 / 1.5)
    assert top_fraction_precision([0.9, 0.5, 0.1], [1, 0, 1], fraction=1.0) == pytest.approx(2 / 3)
    assert math.isnan(top_fraction_precision([], []))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            top_fraction_precision([0.1], [1], fraction=bad)


def test_box_acc_table_matches_a_plain_reference() -> None:
    """Components of each thresholded map against torchvision's box_iou, threshold by threshold."""
    from scipy import ndimage
    from torchvision.ops import box_iou

    from camcore.boxes import normalize_map, upsample_map, working_shape

    gen = torch.Generator().manual_seed(0)
    maps = [torch.rand(7, 7, generator=gen) ** 3 for _ in range(4)]
    sizes = [(120, 90), (90, 120), (100, 100), (64, 48)]
    gts = [_t([[10, 10, 60, 50], [70, 40, 110, 85]]), _t([[0, 0, 45, 60]]), _t([[20, 30, 90, 95]]), _t([[5, 5, 30, 40]])]
    ts = [i / 20 for i in range(20)]
    table = box_acc_table(maps, gts, sizes, thresholds=ts, working_size=64)
    for p, (cam, gt, size) in enumerate(zip(maps, gts, sizes, strict=True)):
        arr = normalize_map(upsample_map(cam, working_shape(size, 64)), "minmax").numpy()
        gh, gw = arr.shape
        for ti, t in enumerate(ts):
            lab, count = ndimage.label(arr > t, structure=np.ones((3, 3)))
            boxes = _t([[s[1].start * size[0] / gw, s[0].start * size[1] / gh, s[1].stop * size[0] / gw, s[0].stop * size[1] / gh]
                        for s in ndimage.find_objects(lab)])
            best = float(box_iou(boxes, gt).max()) if count else 0.0
            assert table[p, ti].tolist() == [best >= d for d in (0.3, 0.5, 0.7)]
