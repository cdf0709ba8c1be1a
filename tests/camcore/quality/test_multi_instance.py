"""The default method (CAM + DDT, adaptive threshold, components by mass) finds several objects."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from camcore.boxes import BoxParams
from camcore.calibration import apply
from camcore.localizer import Localizer
from camcore.metrics import coco_ap
from camcore.objectness import SPEC_KEY, fit_objectness
from tests.camcore.quality.synth import planted_images


@pytest.mark.slow  # trains the planted-object model
def test_default_method_localises_several_planted_objects(planted) -> None:  # type: ignore[no-untyped-def]
    stats = fit_objectness(planted.model, planted.spec, planted.train_images, planted.train_tags)
    planted.spec.extra = {**planted.spec.extra, SPEC_KEY: stats.to_dict()}
    images, tags, truth = planted_images(24, seed=7, objects=(2, 3))
    assert BoxParams().method == "ddt_cam" and BoxParams().mode == "objects"
    results = Localizer(planted.model, planted.spec).localize(images, tags)
    found = total = multi = 0
    preds, gts = [], []
    for r, boxes in zip(results, truth, strict=True):
        gt = torch.tensor(boxes, dtype=torch.float32)
        total += len(gt)
        found += int((box_iou(r.boxes, gt).max(dim=0).values >= 0.5).sum()) if len(r.boxes) else 0
        multi += len(r.boxes) >= 2
        assert (r.scores[:-1] >= r.scores[1:]).all() and float(r.scores.max()) <= 1.0
        preds.append((r.boxes, r.scores, r.labels))
        gts.append((gt, torch.zeros(len(gt), dtype=torch.long)))
    assert multi >= 0.8 * len(images), f"{multi}/{len(images)} images got several boxes"
    assert found >= 0.7 * total, f"{found}/{total} planted objects matched at IoU 0.5"
    # the stored maps reproduce the boxes with no model pass (what calibration relies on)
    again = apply({i: r.maps for i, r in enumerate(results)}, {i: r.image_size for i, r in enumerate(results)},
                  BoxParams(), class_scores={i: r.class_scores for i, r in enumerate(results)})
    assert all(torch.allclose(again[i][0], r.boxes) for i, r in enumerate(results))
    ap_multi = coco_ap(preds, gts)["AP50"]
    top1 = [(b[:1], s[:1], lab[:1]) for b, s, lab in preds]
    assert ap_multi is not None and ap_multi > coco_ap(top1, gts)["AP50"]  # extra boxes raise AP50
