"""Box extraction on hand-made maps."""

from __future__ import annotations

import pytest
import torch

from camcore.boxes import (
    BoxParams,
    boxes_from_maps,
    component_boxes,
    largest_component_box,
    nms,
    normalize_map,
    upsample_map,
    working_shape,
)


def _blob_map(h: int = 16, w: int = 16) -> torch.Tensor:
    m = torch.zeros(h, w)
    m[4:8, 8:12] = 1.0  # cells rows 4..7, cols 8..11
    return m


def test_one_blob_paper_rule_gives_its_box_in_image_pixels() -> None:
    params = BoxParams(method="cam", mode="largest", normalize="max", threshold=0.5, working_size=160)
    boxes, scores, labels = boxes_from_maps({3: _blob_map()}, (160, 160), params)
    assert labels.tolist() == [3] and scores.shape == (1,)
    # each cell is 10 px; at 50% of the max the bilinear map crosses exactly at the blob's edges
    assert torch.allclose(boxes[0], torch.tensor([80.0, 40.0, 120.0, 80.0]), atol=1.5), boxes


def test_boxes_scale_per_axis_to_a_non_square_image() -> None:
    params = BoxParams(method="cam", mode="largest", normalize="max", threshold=0.5, working_size=256)
    boxes, _, _ = boxes_from_maps({0: _blob_map()}, (640, 320), params)  # 40 x 20 px per cell
    assert torch.allclose(boxes[0], torch.tensor([320.0, 80.0, 480.0, 160.0]), atol=3.0), boxes


def test_low_threshold_grows_the_box_and_stays_clipped() -> None:
    tight, _, _ = boxes_from_maps({0: _blob_map()}, (160, 160), BoxParams(method="cam", mode="largest", normalize="max", threshold=0.5, working_size=160))
    loose, _, _ = boxes_from_maps({0: _blob_map()}, (160, 160), BoxParams(method="cam", mode="largest", normalize="max", threshold=0.05, working_size=160))
    assert (loose[0, :2] < tight[0, :2]).all() and (loose[0, 2:] > tight[0, 2:]).all()
    edge = torch.zeros(8, 8)
    edge[:, 7] = 1.0
    b, _, _ = boxes_from_maps({0: edge}, (100, 50), BoxParams(method="cam", mode="largest", normalize="max", threshold=0.01))
    assert float(b[0, 2]) == 100.0 and float(b[0, 3]) == 50.0 and float(b[0, 1]) == 0.0


def _two_blobs() -> torch.Tensor:
    m = torch.zeros(16, 16)
    m[1:4, 1:4] = 0.8  # small, weaker
    m[8:14, 8:14] = 1.0  # big, strongest
    return m


def test_two_blobs_largest_vs_multi() -> None:
    size = (160, 160)
    largest, _, _ = boxes_from_maps({0: _two_blobs()}, size, BoxParams(method="cam", normalize="max", mode="largest", threshold=0.5, working_size=160))
    assert largest.shape == (1, 4)
    assert torch.allclose(largest[0], torch.tensor([80.0, 80.0, 140.0, 140.0]), atol=1.5)

    multi, scores, labels = boxes_from_maps(
        {0: _two_blobs()}, size, BoxParams(method="cam", normalize="max", mode="multi", threshold=0.5, working_size=160, min_area=0.01))
    assert multi.shape == (2, 4) and labels.tolist() == [0, 0]
    assert torch.allclose(multi[0], torch.tensor([80.0, 80.0, 140.0, 140.0]), atol=1.5)
    assert torch.allclose(multi[1], torch.tensor([10.0, 10.0, 40.0, 40.0]), atol=2.0)
    assert scores[0] > scores[1]  # peak 1.0 vs 0.8
    assert 0.0 < float(scores[1]) < float(scores[0]) < 1.0  # probabilities (camcore.boxes.score)
    from camcore.boxes import component_boxes, normalize_map, upsample_map
    _, rule_scores = component_boxes(normalize_map(upsample_map(_two_blobs(), (160, 160)), "max"), size, threshold=0.5, min_area=0.01)
    assert float(rule_scores[1]) == pytest.approx(0.8, abs=0.05)  # the rule's own score: the peak ratio

    # min_area above the small blob's share (30x30 of 160x160 = 3.5%) drops it
    big_only, _, _ = boxes_from_maps(
        {0: _two_blobs()}, size, BoxParams(method="cam", normalize="max", mode="multi", threshold=0.5, working_size=160, min_area=0.05))
    assert big_only.shape == (1, 4)


@pytest.mark.parametrize("fill", [0.0, -3.0])
def test_empty_map_gives_no_box(fill: float) -> None:
    for mode in ("largest", "multi"):
        boxes, scores, labels = boxes_from_maps({0: torch.full((8, 8), fill)}, (100, 80), BoxParams(mode=mode))
        assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)
    assert normalize_map(torch.zeros(4, 4)) is None


def test_all_on_map_gives_the_whole_image() -> None:
    for mode in ("largest", "multi"):
        for normalize in ("max", "minmax"):
            boxes, _, _ = boxes_from_maps({1: torch.full((8, 8), 2.5)}, (100, 80), BoxParams(mode=mode, normalize=normalize))
            assert boxes.tolist() == [[0.0, 0.0, 100.0, 80.0]]


def test_no_maps_and_several_classes() -> None:
    boxes, scores, labels = boxes_from_maps({}, (10, 10), BoxParams())
    assert boxes.shape == (0, 4)
    maps = {0: _blob_map(), 2: _two_blobs()}
    boxes, scores, labels = boxes_from_maps(maps, (160, 160), BoxParams(method="cam", mode="largest", normalize="max", threshold=0.5),
                                            class_scores=torch.tensor([0.9, 0.0, 0.3]))
    assert sorted(labels.tolist()) == [0, 2]
    assert labels.tolist() == [0, 2]  # sorted by score: class 0 box scaled by 0.9, class 2 by 0.3
    assert (scores[:-1] >= scores[1:]).all()


def test_class_aware_nms() -> None:
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    s = torch.tensor([0.9, 0.8, 0.7])
    keep = nms(b, s, torch.tensor([0, 0, 1]), 0.5)
    assert keep.tolist() == [0, 2]  # box 1 suppressed by box 0 (same class), box 2 other class
    assert nms(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


def test_rules_and_helpers_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="threshold"):
        BoxParams(method="cam", mode="largest", normalize="max", threshold=1.5)
    with pytest.raises(ValueError, match="unknown BoxParams fields"):
        BoxParams.from_dict({"treshold": 0.3})
    with pytest.raises(ValueError, match="unknown box mode"):
        boxes_from_maps({0: _blob_map()}, (10, 10), BoxParams(mode="nope"))
    with pytest.raises(ValueError, match="image_size"):
        working_shape((0, 10), 256)
    with pytest.raises(ValueError):
        upsample_map(torch.zeros(2, 2, 2), (4, 4))
    with pytest.raises(ValueError, match="non-finite"):
        normalize_map(torch.tensor([[float("nan"), 1.0]]))


def test_params_round_trip_and_working_grid() -> None:
    p = BoxParams(method="cam", normalize="max", mode="multi", threshold=0.35, extra={"k": 1})
    assert BoxParams.from_dict(p.to_dict()) == p
    assert BoxParams.from_dict(None) == BoxParams()
    assert working_shape((640, 480), 256) == (192, 256)
    assert working_shape((100, 400), 200) == (200, 50)


def test_low_level_rules_directly() -> None:
    norm = normalize_map(upsample_map(_two_blobs(), (160, 160)))
    assert norm is not None
    b, s = largest_component_box(norm, (160, 160), threshold=0.5)
    assert b.shape == (1, 4) and 0.5 <= float(s[0]) <= 1.0
    b, s = component_boxes(norm, (160, 160), threshold=0.5, min_area=0.0)
    assert b.shape == (2, 4)
