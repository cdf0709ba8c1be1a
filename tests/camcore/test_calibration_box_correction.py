"""Per-class box corrections: the geometry, its bounds, and how calibrations store them."""

from __future__ import annotations

import json

import pytest
import torch

from camcore.boxes import BoxParams
from camcore.boxes.correction import EXTRA_KEY, BoxCorrection, corrections_from_extra


def test_correction_scales_about_the_shifted_centre_and_clips_to_the_image() -> None:
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 100.0, 80.0]])  # 40x20 at (30, 30); the whole image
    out = BoxCorrection(width=0.5, height=1.5, shift_x=0.25, shift_y=-0.1).apply(boxes, (100, 80))
    # centre (30 + 0.25 * 40, 30 - 0.1 * 20) = (40, 28); size (20, 30)
    assert torch.allclose(out[0], torch.tensor([30.0, 13.0, 50.0, 43.0]))
    # (50 + 25, 40 - 8) with size (50, 120): clipped to the 100x80 image
    assert torch.allclose(out[1], torch.tensor([50.0, 0.0, 100.0, 80.0]))
    assert out.dtype == torch.float32


def test_identity_and_empty_inputs_are_returned_unchanged() -> None:
    boxes = torch.tensor([[1, 2, 30, 40]], dtype=torch.int64)
    same = BoxCorrection().apply(boxes, (64, 64))
    assert BoxCorrection().is_identity and torch.equal(same, boxes.float())
    assert BoxCorrection(width=0.8).apply(torch.zeros(0, 4), (64, 64)).shape == (0, 4)
    with pytest.raises(ValueError, match="Tensor\\[N, 4\\]"):
        BoxCorrection(width=0.8).apply(torch.zeros(4), (64, 64))


@pytest.mark.parametrize(
    "fields, message",
    [({"width": 0.1}, "width must be in"), ({"height": 5.0}, "height must be in"), ({"shift_y": 1.5}, "shift_y must be in"),
     ({"shift_x": float("nan")}, "shift_x must be in")],
)
def test_out_of_range_corrections_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BoxCorrection(**fields)


def test_corrections_round_trip_through_box_params_and_json() -> None:
    table = {"0": BoxCorrection(width=0.8, shift_y=0.02).to_dict(), "3": BoxCorrection(height=1.1).to_dict()}
    params = BoxParams(extra={EXTRA_KEY: table})
    stored = json.loads(json.dumps(params.to_dict()))  # as model_versions.calibration keeps it
    back = corrections_from_extra(BoxParams.from_dict(stored).extra)
    assert back == {0: BoxCorrection(width=0.8, shift_y=0.02), 3: BoxCorrection(height=1.1)}
    assert corrections_from_extra(None) == {} and corrections_from_extra({"other": 1}) == {}


@pytest.mark.parametrize(
    "extra, message",
    [({EXTRA_KEY: [1, 2]}, "must be a dict"), ({EXTRA_KEY: {"cat": {"width": 0.9}}}, "class indices"),
     ({EXTRA_KEY: {"0": {"scale": 0.9}}}, "unknown box correction fields"), ({EXTRA_KEY: {"0": 0.9}}, "must be a dict")],
)
def test_malformed_stored_corrections_are_refused(extra: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        corrections_from_extra(extra)
