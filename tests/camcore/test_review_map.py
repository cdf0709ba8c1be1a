"""Descriptor codes and the location map learned from reviewed boxes (camcore.descriptor_basis,
camcore.boxes.review_map, camcore.review_fit, and calibration's stage 3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from camcore.boxes import BoxParams, BoxWorkers, MapsOfImage, boxes_from_maps
from camcore.boxes.review_map import EXTRA_KEY, ReviewMap, review_map_from_extra
from camcore.calibration import apply, calibrate, review_map_wins
from camcore.concept_maps import decode_codes, encode_codes
from camcore.descriptor_basis import CODE_DIMENSIONS, DescriptorBasis, basis_from_moments
from camcore.objectness import DdtAccumulator, ObjectnessStats
from camcore.review_fit import cross_fitted_maps, fit_review_map, inside_boxes, training_cells

GRID, SIDE = 12, 240  # map cells per side, image pixels per side (20 px per cell)


def test_basis_from_streamed_moments_is_the_pca_and_codes_are_whitened() -> None:
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 6, generator=gen)
    x = torch.randn(5000, 6, generator=gen, dtype=torch.float64) @ mixing.double() + 3.0  # [pixels, C]
    basis = basis_from_moments(len(x), x.sum(0), x.T @ x, dimensions=3)
    assert basis is not None and basis.dimensions == 3 and basis.channels == 6
    centred = x - x.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    for k in range(3):  # the leading principal axes, up to sign
        assert abs(abs(float(vh[k] @ basis.components[k].double())) - 1.0) < 1e-4
    codes = basis.project(x.float().T.reshape(1, 6, 50, 100))  # [1, 3, 50, 100]
    flat = codes.reshape(3, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(3), atol=1e-3)
    assert torch.allclose(flat.std(1), torch.ones(3), atol=1e-2)
    restored = DescriptorBasis.from_dict(json.loads(json.dumps(basis.to_dict())))
    assert torch.allclose(restored.project(x.float().T.reshape(1, 6, 50, 100)), codes, atol=1e-3)


def test_no_basis_without_spread_and_malformed_bases_are_refused() -> None:
    assert basis_from_moments(1, torch.ones(3), torch.eye(3)) is None
    flat = torch.ones(10, 3, dtype=torch.float64)
    assert basis_from_moments(10, flat.sum(0), flat.T @ flat) is None
    with pytest.raises(ValueError, match="malformed descriptor basis"):
        DescriptorBasis.from_dict({"mean": [0.0], "components": [[1.0, 2.0]], "scale": [1.0]})
    with pytest.raises(ValueError, match="scale"):
        DescriptorBasis(torch.zeros(2), torch.eye(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="descriptors must be"):
        DescriptorBasis(torch.zeros(2), torch.eye(2), torch.ones(2)).project(torch.zeros(1, 3, 2, 2))


def test_objectness_statistics_carry_the_class_agnostic_basis_and_old_ones_load_without() -> None:
    gen = torch.Generator().manual_seed(1)
    acc = DdtAccumulator(num_classes=2, channels=20)
    for _ in range(3):
        acc.update(torch.randn(4, 20, 6, 6, generator=gen), [[0], [1], [0, 1], []])
    stats = acc.finalize()
    assert stats.basis is not None and stats.basis.dimensions == CODE_DIMENSIONS and stats.basis.channels == 20
    assert acc.all_count == 3 * 4 * 36  # every image once, tagged or not, whatever its tag count
    restored = ObjectnessStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert restored.basis is not None and torch.allclose(restored.basis.components, stats.basis.components, atol=1e-5)
    old = {k: v for k, v in stats.to_dict().items() if k != "basis"}
    assert ObjectnessStats.from_dict(old).basis is None


def test_codes_round_trip_as_float16_bytes_and_bad_codes_are_refused() -> None:
    codes = torch.randn(16, 14, 14)
    data = encode_codes(codes)
    assert len(data) < 7000
    assert torch.allclose(decode_codes(data), codes, atol=1e-2)
    with pytest.raises(ValueError, match="3-D"):
        encode_codes(torch.zeros(14, 14))
    with pytest.raises(ValueError, match="non-finite"):
        encode_codes(torch.full((2, 3, 3), float("nan")))
    with pytest.raises(ValueError, match="not an encoded descriptor code array"):
        decode_codes(b"not an array")


def _scene(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One synthetic image: ``(codes[4, 12, 12], class map[12, 12], object box[1, 4] pixels)``.

    The object (5-7 cells a side) lights code 0; the class map only lights a 2 x 2 part in its
    top-left corner, so the plain map's box is far too small."""
    side = int(rng.integers(5, 8))
    x0, y0 = (int(v) for v in rng.integers(0, GRID - side, size=2))
    codes = torch.from_numpy(rng.normal(0, 0.3, size=(4, GRID, GRID))).float()
    codes[0, y0 : y0 + side, x0 : x0 + side] += 1.5
    cam = torch.from_numpy(rng.normal(0, 0.05, size=(GRID, GRID))).float()
    cam[y0 : y0 + 2, x0 : x0 + 2] += 1.0
    cell = SIDE / GRID
    return codes, cam, torch.tensor([[x0 * cell, y0 * cell, (x0 + side) * cell, (y0 + side) * cell]])


def _hits(boxes: dict, truth: dict) -> int:
    return sum(int(len(b) > 0 and float(box_iou(b[:1], truth[k]).max()) >= 0.5) for k, (b, _s, _l) in boxes.items())


def test_calibration_adopts_a_review_map_that_localises_whole_objects_from_twelve_reviewed_images() -> None:
    rng = np.random.default_rng(0)
    scenes = [_scene(rng) for _ in range(40)]
    codes = {i: s[0] for i, s in enumerate(scenes)}
    maps = {i: {0: s[1]} for i, s in enumerate(scenes)}
    truth = {i: s[2] for i, s in enumerate(scenes)}
    sizes = {i: (SIDE, SIDE) for i in range(40)}
    reviewed = {i: [(0, truth[i][0].tolist())] for i in range(12)}
    rest = range(12, 40)

    plain = calibrate({i: maps[i] for i in reviewed}, sizes, reviewed)
    learned = calibrate({i: maps[i] for i in reviewed}, sizes, reviewed, codes_by_image=codes)
    report = learned["extra"]["calibration"]["review_map"]
    assert report["adopted"] is True and report["images"] == 12 and report["pairs"] == 12
    assert report["learned"]["hits"] > report["plain"]["hits"]
    assert EXTRA_KEY in learned["extra"] and EXTRA_KEY not in plain["extra"]
    assert plain["extra"]["calibration"]["review_map"] == {"adopted": False, "reason": "no descriptor codes for the reviewed images"}

    before = apply({i: maps[i] for i in rest}, sizes, plain)
    after = apply({i: maps[i] for i in rest}, sizes, learned, codes_by_image=codes)
    assert _hits(after, truth) >= _hits(before, truth) + 10, (_hits(before, truth), _hits(after, truth))
    # without codes the same params box the raw maps (no review map can be applied)
    raw = apply({i: maps[i] for i in rest}, sizes, learned)
    assert _hits(raw, truth) < _hits(after, truth)

    # calibrating again from the params it stored gives the same result (it starts from the raw maps)
    again = calibrate({i: maps[i] for i in reviewed}, sizes, reviewed, learned, codes_by_image=codes)
    assert again["extra"][EXTRA_KEY] == learned["extra"][EXTRA_KEY]


def test_a_review_map_is_not_tried_when_a_reviewed_image_has_no_codes() -> None:
    rng = np.random.default_rng(1)
    scenes = [_scene(rng) for _ in range(8)]
    maps = {i: {0: s[1]} for i, s in enumerate(scenes)}
    reviewed = {i: [(0, s[2][0].tolist())] for i, s in enumerate(scenes)}
    sizes = {i: (SIDE, SIDE) for i in range(8)}
    some = {i: scenes[i][0] for i in range(4)}
    out = calibrate(maps, sizes, reviewed, codes_by_image=some)
    assert out["extra"]["calibration"]["review_map"] == {"adopted": False, "reason": "some reviewed images have no descriptor codes"}
    assert EXTRA_KEY not in out["extra"]


def test_cross_fitted_maps_come_from_fits_without_the_image() -> None:
    rng = np.random.default_rng(2)
    scenes = [_scene(rng) for _ in range(5)]
    codes = {i: s[0] for i, s in enumerate(scenes)}
    maps = {i: {0: s[1]} for i, s in enumerate(scenes)}
    truth = {0: {i: s[2] for i, s in enumerate(scenes)}}
    sizes = {i: (SIDE, SIDE) for i in range(5)}
    crossed = cross_fitted_maps(codes, maps, sizes, truth)
    assert sorted(crossed) == list(range(5))
    for held in range(5):  # five images: one fold each, fitted on the four others
        cells, labels = training_cells(codes, maps, sizes, truth, set(range(5)) - {held})
        own = fit_review_map(cells, labels)
        assert own is not None
        assert torch.allclose(crossed[held][0], own.apply(codes[held], maps[held][0]), atol=1e-4)


def test_cells_inside_boxes_use_cell_centres() -> None:
    inside = inside_boxes((4, 4), (400, 200), torch.tensor([[0.0, 0.0, 140.0, 100.0]]))  # cells 100 x 50 px
    assert inside.tolist() == [[True, False, False, False], [True, False, False, False],
                               [False, False, False, False], [False, False, False, False]]


def test_box_rule_applies_a_stored_review_map_only_with_codes_and_in_worker_processes_too() -> None:
    rng = np.random.default_rng(3)
    codes, cam, _truth = _scene(rng)
    review = ReviewMap((4.0, 0.0, 0.0, 0.0), 0.5, -3.0)
    params = BoxParams(extra={EXTRA_KEY: review.to_dict()})
    assert review_map_from_extra(params.extra) == review
    plain = boxes_from_maps({0: cam}, (SIDE, SIDE), params)
    with_codes = boxes_from_maps({0: cam}, (SIDE, SIDE), params, codes=codes)
    expected = boxes_from_maps({0: review.apply(codes, cam)}, (SIDE, SIDE), BoxParams())
    assert torch.equal(plain[0], boxes_from_maps({0: cam}, (SIDE, SIDE), BoxParams())[0])
    assert torch.allclose(with_codes[0], expected[0]) and not torch.equal(with_codes[0], plain[0])
    workers = BoxWorkers(1)
    try:
        (remote,) = workers.submit(params, [MapsOfImage({0: cam}, (SIDE, SIDE), None, codes)]).result()
    finally:
        workers.close()
    assert torch.allclose(remote[0], with_codes[0])
    with pytest.raises(ValueError, match="codes must be"):
        review.apply(torch.zeros(3, GRID, GRID), cam)
    with pytest.raises(ValueError, match="malformed review map"):
        review_map_from_extra({EXTRA_KEY: {"code_weights": [1.0]}})
    with pytest.raises(ValueError, match="finite"):
        ReviewMap((float("nan"),), 0.0, 0.0)


def test_a_review_map_must_lose_neither_hits_nor_mean_iou_to_be_adopted() -> None:
    plain = np.array([0.62, 0.55, 0.40, 0.30, 0.70])  # 3 hits, mean 0.514
    assert review_map_wins(plain, np.array([0.66, 0.58, 0.45, 0.35, 0.72]))  # same hits, higher IoU
    assert review_map_wins(plain, np.array([0.60, 0.52, 0.51, 0.30, 0.71]))  # one more hit, higher IoU
    assert not review_map_wins(plain, np.array([0.51, 0.51, 0.51, 0.05, 0.51]))  # one more hit, mean 0.418
    assert not review_map_wins(plain, plain - 0.001)  # the same hits with less IoU
    assert not review_map_wins(plain, np.array([0.70, 0.70, 0.45, 0.45, 0.45]))  # higher IoU, one hit fewer
    assert not review_map_wins(plain, plain.copy())
    with pytest.raises(ValueError, match="same reviewed pairs"):
        review_map_wins(plain, plain[:3])
