"""End to end: a tiny GAP CNN trained on image-level tags only localises the tagged shape."""

from __future__ import annotations

import torch

from camcore.boxes import BoxParams

# The CAM paper's rule (vanilla CAM, largest component), at 30% of the max: camlabel's default
from camcore.localizer import Localizer
from camcore.metrics import coco_ap, corloc

# method may change (camcore.objectness); these tests pin the plain CAM path.
PAPER_RULE = BoxParams(method="cam", mode="largest", threshold=0.3, normalize="max")


def _ground_truth(boxes, tags):  # type: ignore[no-untyped-def]
    return [(torch.tensor([b]), torch.tensor(t)) for b, t in zip(boxes, tags, strict=True)]


def test_tiny_model_localises_shapes_with_corloc_above_0_9(trained_shapes, device) -> None:  # type: ignore[no-untyped-def]
    ts = trained_shapes
    assert ts.metrics["val"]["mean_ap"] >= 0.95, ts.metrics["val"]
    # The tiny CNN's maps are blurrier than a deep network's (stride 4, 15 px receptive field
    # step), so the paper's largest-component rule is used at 30% of the max instead of 20%.
    # Its maps sit 1.5 cells off the image (spec.map_shift), so alignment is asked for explicitly
    # (Localizer's default is off: unshifted maps localise better for EfficientNet-Lite0 on photos).
    loc = Localizer(ts.model, ts.spec, device=device, params=PAPER_RULE, align=True)
    results = loc.localize(ts.test_images, ts.test_tags)
    gt = _ground_truth(ts.test_boxes, ts.test_tags)
    score = corloc(results, gt)
    assert score >= 0.9, score
    for r, tags in zip(results, ts.test_tags, strict=True):
        assert r.labels.tolist() == tags  # one box, for the tag asked for
        assert set(r.maps) == set(tags)
        assert r.boxes.shape == (1, 4)
        assert (r.boxes[:, 0] >= 0).all() and (r.boxes[:, 2] <= 64).all()
    ap = coco_ap(results, gt, num_classes=3)
    assert ap["AP50"] is not None and ap["AP50"] >= 0.8, ap


def test_without_alignment_boxes_sit_off_the_shapes(trained_shapes) -> None:  # type: ignore[no-untyped-def]
    """The sub-cell map alignment is what lines maps up with the image (see ModelSpec.map_shift)."""
    ts = trained_shapes
    gt = _ground_truth(ts.test_boxes, ts.test_tags)
    aligned = Localizer(ts.model, ts.spec, params=PAPER_RULE, align=True).localize(ts.test_images, ts.test_tags)
    raw = Localizer(ts.model, ts.spec, params=PAPER_RULE, align=False).localize(ts.test_images, ts.test_tags)

    def centre_error(results):  # type: ignore[no-untyped-def]
        errs = []
        for r, (g, _) in zip(results, gt, strict=True):
            c = (r.boxes[0, :2] + r.boxes[0, 2:]) / 2 - (g[0, :2] + g[0, 2:]) / 2
            errs.append(c)
        return torch.stack(errs).mean(0)

    # Unaligned tiny_cnn maps are shifted right/down (cell j sits at 4j+0.5, not 4j+2).
    assert (centre_error(raw) > centre_error(aligned)).all()
    assert corloc(aligned, gt) >= corloc(raw, gt)


def test_top_k_localises_predicted_classes(trained_shapes) -> None:  # type: ignore[no-untyped-def]
    ts = trained_shapes
    loc = Localizer(ts.model, ts.spec, params=PAPER_RULE)
    results = loc.localize(ts.test_images[:12], None, top_k=1)
    predicted = [int(r.class_scores.argmax()) for r in results]
    assert [list(r.maps) for r in results] == [[p] for p in predicted]
    assert sum(p == t[0] for p, t in zip(predicted, ts.test_tags[:12], strict=True)) >= 11
    two = loc.localize(ts.test_images[:4], None, top_k=2)
    for r in two:
        assert len(r.maps) == 2
        assert set(r.maps) == set(r.class_scores.topk(2).indices.tolist())
