"""Metrics on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from camcore.metrics import coco_ap, corloc, max_box_acc_v2


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
