"""Concept maps: compact storage of raw maps and colour-mapped PNG renderings.

- :func:`encode_map` / :func:`decode_map`: a raw low-resolution map ``Tensor[h, w]`` as float16
  ``.npy`` bytes (a 12x12 map is 416 bytes), so boxes can be recomputed at another threshold
  without running the model again.
- :func:`encode_codes` / :func:`decode_codes`: an image's descriptor codes ``Tensor[d, h, w]``
  (its descriptors on the collection's principal components, :mod:`camcore.descriptor_basis`) as
  float16 ``.npy`` bytes (16 x 14 x 14: 6.4 KB), so reviewed boxes can teach a location map
  without running the model again (:mod:`camcore.review_fit`).
- :func:`normalize_map`: the map min-max normalised to ``uint8`` 0..255, the values a heatmap
  colours through :data:`TURBO_LUT` (the browser paints these on a canvas; see
  ``web/static/js/heatmap.js``).
- :func:`render_heatmap_png`: min-max normalised map, bilinearly resized to the display size and
  coloured with a Turbo colormap (Google's polynomial approximation, numpy only) as a palette PNG.
  :func:`overlay_size` is the size camlabel stores overlays at (longest side
  :data:`OVERLAY_MAX_SIDE`; a browser scales the smooth heatmap over the photo).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = [
    "OVERLAY_MAX_SIDE", "TURBO_LUT", "colorize", "decode_codes", "decode_map", "encode_codes", "encode_map", "normalize_map",
    "overlay_size", "render_heatmap_png",
]

#: Longest side in pixels of a stored heatmap overlay PNG. A map has ~14x14 cells, so 96 px
#: (~7 px per cell, colour-mapped after bilinear upsampling) holds all it shows; the browser
#: scales it smoothly over the photo. (192 px cost 2.3x the time and 2.7x the bytes.)
OVERLAY_MAX_SIDE = 96


def overlay_size(image_size: tuple[int, int], max_side: int = OVERLAY_MAX_SIDE) -> tuple[int, int]:
    """(width, height) in pixels of an overlay for an image of ``image_size`` (width, height):
    the image's aspect ratio, longest side at most ``max_side``."""
    width, height = int(image_size[0]), int(image_size[1])
    if width <= 0 or height <= 0 or max_side < 1:
        raise ValueError(f"image_size must be positive and max_side >= 1, got {image_size}, {max_side}")
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _turbo_lut() -> np.ndarray:
    """256 x 3 uint8 Turbo colormap from the polynomial fit by Anton Mikhailov (Google, 2019)."""
    x = np.linspace(0.0, 1.0, 256)
    v4 = np.stack([np.ones_like(x), x, x**2, x**3])
    v2 = np.stack([x**4, x**5])
    r = np.array([0.13572138, 4.61539260, -42.66032258, 132.13108234]) @ v4 + np.array([-152.94239396, 59.28637943]) @ v2
    g = np.array([0.09140261, 2.19418839, 4.84296658, -14.18503333]) @ v4 + np.array([4.27729857, 2.82956604]) @ v2
    b = np.array([0.10667330, 12.64194608, -60.58204836, 110.36276771]) @ v4 + np.array([-89.90310912, 27.34824973]) @ v2
    return (np.clip(np.stack([r, g, b], axis=1), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


#: Turbo colormap, ``uint8[256, 3]``: index 0 = low (dark blue), 255 = high (dark red).
TURBO_LUT: np.ndarray = _turbo_lut()


def _as_2d(cam: Tensor | np.ndarray) -> Tensor:
    t = torch.as_tensor(np.asarray(cam) if not isinstance(cam, Tensor) else cam)
    if t.dim() != 2:
        raise ValueError(f"map must be 2-D [h, w], got shape {tuple(t.shape)}")
    return t.detach().float().cpu()


def _float16_npy(arr: np.ndarray, what: str) -> bytes:
    """``arr`` as float16 ``.npy`` bytes, values beyond float16 range clipped; ``ValueError`` naming
    ``what`` for non-finite values."""
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains non-finite values")
    fmax = float(np.finfo(np.float16).max)
    buf = io.BytesIO()
    np.save(buf, np.clip(arr, -fmax, fmax).astype(np.float16), allow_pickle=False)
    return buf.getvalue()


def _float_array(data: bytes, ndim: int, what: str) -> Tensor:
    """``.npy`` bytes of a ``ndim``-D float array -> float32 tensor; ``ValueError`` naming ``what``."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"not an encoded {what}: {exc}") from exc
    if arr.ndim != ndim or arr.dtype.kind != "f":
        raise ValueError(f"encoded {what} must be a {ndim}-D float array, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr.astype(np.float32))


def encode_map(cam: Tensor | np.ndarray) -> bytes:
    """``Tensor[h, w]`` -> float16 ``.npy`` bytes (values beyond float16 range are clipped)."""
    return _float16_npy(_as_2d(cam).numpy(), "map")


def decode_map(data: bytes) -> Tensor:
    """Bytes from :func:`encode_map` -> ``Tensor[h, w]`` float32.

    Raises:
        ValueError: the bytes are not a 2-D float ``.npy`` array.
    """
    return _float_array(data, 2, "map")


def encode_codes(codes: Tensor | np.ndarray) -> bytes:
    """``Tensor[d, h, w]`` descriptor codes -> float16 ``.npy`` bytes (clipped to float16 range).

    Raises:
        ValueError: not 3-D, or non-finite values.
    """
    arr = torch.as_tensor(np.asarray(codes) if not isinstance(codes, Tensor) else codes).detach().float().cpu().numpy()
    if arr.ndim != 3:
        raise ValueError(f"codes must be 3-D [d, h, w], got shape {arr.shape}")
    return _float16_npy(arr, "descriptor code array")


def decode_codes(data: bytes) -> Tensor:
    """Bytes from :func:`encode_codes` -> ``Tensor[d, h, w]`` float32.

    Raises:
        ValueError: the bytes are not a 3-D float ``.npy`` array.
    """
    return _float_array(data, 3, "descriptor code array")


def normalize_map(cam: Tensor | np.ndarray) -> np.ndarray:
    """``Tensor[h, w]`` raw map (any scale) -> ``uint8[h, w]``: min-max normalised to 0..255
    (rounded; all zeros when the map is flat).

    Raises:
        ValueError: the map is not 2-D or holds non-finite values.
    """
    arr = _as_2d(cam).numpy().astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("map contains non-finite values")
    lo, hi = float(arr.min()), float(arr.max())
    norm = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return np.clip(np.rint(norm * 255.0), 0, 255).astype(np.uint8)


def colorize(values: np.ndarray) -> np.ndarray:
    """``float[H, W]`` in [0, 1] -> ``uint8[H, W, 3]`` Turbo colours."""
    idx = np.clip(np.rint(np.nan_to_num(values) * 255.0), 0, 255).astype(np.uint8)
    return TURBO_LUT[idx]


def render_heatmap_png(
    cam: Tensor | np.ndarray, size: tuple[int, int], *, opacity: float | None = None
) -> bytes:
    """Colour-mapped PNG of a map at display size.

    The low-resolution map is min-max normalised to 0..255, upsampled bilinearly to ``size`` and
    written as a palette PNG whose palette is the Turbo colormap (small and fast to encode; any
    PNG reader shows it in colour).

    Args:
        cam: ``Tensor[h, w]`` raw map (any scale).
        size: (width, height) of the PNG in pixels, e.g. the image's display size.
        opacity: ``None`` for an opaque PNG; otherwise each palette entry ``i`` gets alpha
            ``opacity * i`` (transparent where the map is low), for overlaying on the photo.

    Returns:
        PNG bytes.
    """
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive (width, height), got {size}")
    if opacity is not None and not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    small = Image.fromarray(normalize_map(cam))
    img = small.resize((width, height), Image.Resampling.BILINEAR)
    img.putpalette(TURBO_LUT.tobytes())
    buf = io.BytesIO()
    if opacity is None:
        img.save(buf, format="PNG", compress_level=1)
    else:
        alpha = np.clip(np.rint(np.arange(256) * opacity), 0, 255).astype(np.uint8)
        img.save(buf, format="PNG", compress_level=1, transparency=alpha.tobytes())
    return buf.getvalue()
