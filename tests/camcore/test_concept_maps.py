"""Concept maps: compact raw storage and colour-mapped PNGs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from camcore.concept_maps import TURBO_LUT, decode_map, encode_map, render_heatmap_png


def test_encode_decode_round_trip_in_float16() -> None:
    torch.manual_seed(0)
    cam = torch.randn(12, 9) * 40
    data = encode_map(cam)
    assert len(data) < 12 * 9 * 2 + 200  # float16 payload plus the .npy header
    back = decode_map(data)
    assert back.shape == (12, 9) and back.dtype == torch.float32
    assert torch.allclose(back, cam, rtol=1e-3, atol=1e-2)
    assert np.load(io.BytesIO(data)).dtype == np.float16


def test_decode_refuses_garbage_and_encode_refuses_bad_maps() -> None:
    with pytest.raises(ValueError, match="not an encoded map"):
        decode_map(b"garbage")
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 2, 2), dtype=np.float16))
    with pytest.raises(ValueError, match="2-D float"):
        decode_map(buf.getvalue())
    with pytest.raises(ValueError, match="non-finite"):
        encode_map(torch.tensor([[1.0, float("inf")]]))
    with pytest.raises(ValueError, match="2-D"):
        encode_map(torch.zeros(3))


def test_heatmap_png_is_coloured_where_the_map_is_hot() -> None:
    cam = torch.zeros(8, 8)
    cam[1:3, 5:7] = 10.0  # hot top-right
    png = render_heatmap_png(cam, size=(160, 120))
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (160, 120)
    arr = np.asarray(img.convert("RGB")).astype(int)
    hot = arr[30, 120]  # inside the hot cells (x 100..140, y 15..45)
    cold = arr[100, 20]
    assert tuple(cold) == tuple(TURBO_LUT[0])  # the minimum gets the colormap's low end (near black)
    assert hot[0] > 120 and hot[0] > hot[2]  # hot end is red-ish
    assert cold.sum() < 120


def test_heatmap_png_with_alpha_and_constant_maps() -> None:
    cam = torch.zeros(4, 4)
    cam[0, 0] = 1.0
    img = Image.open(io.BytesIO(render_heatmap_png(cam, (40, 40), opacity=0.6))).convert("RGBA")
    alpha = np.asarray(img)[..., 3]
    assert alpha[39, 39] == 0 and 140 <= alpha[0, 0] <= 154  # 0.6 * 255 at the peak
    flat = Image.open(io.BytesIO(render_heatmap_png(torch.ones(3, 3), (5, 5))))
    assert flat.size == (5, 5)
    with pytest.raises(ValueError, match="size"):
        render_heatmap_png(cam, (0, 5))


def test_turbo_lut_runs_blue_to_red() -> None:
    assert TURBO_LUT.shape == (256, 3) and TURBO_LUT.dtype == np.uint8
    assert all(TURBO_LUT[i, 2] > TURBO_LUT[i, 0] for i in (20, 40, 64))  # low values blue
    assert all(TURBO_LUT[i, 0] > TURBO_LUT[i, 2] for i in (192, 230, 255))  # high values red
    assert TURBO_LUT[128, 1] > 200  # green-yellow in the middle
