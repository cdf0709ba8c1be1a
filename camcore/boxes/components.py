"""Connected-component boxes on one normalised map, and class-aware NMS.

Maps are low-resolution (``Tensor[h, w]``, e.g. 12x12). Extraction upsamples a map to a *working
resolution* whose longest side is ``working_size`` pixels with the image's aspect ratio (not the
full image), thresholds it, labels 8-connected components (``scipy.ndimage.label``) and scales the
component boxes to the original image: ``Tensor[N, 4]`` xyxy float pixels, clipped to the image.

Rules:

- ``"largest"`` -- the CAM paper's rule: keep values ``>= threshold * max`` and box the largest
  connected component (one box per map).
- ``"multi"``   -- every component whose area is at least ``min_area`` (a fraction of the image
  area), each scored by its peak normalised activation (the main peak scores 1.0).
- ``"objects"`` -- (camlabel's default, :func:`object_component_boxes`) components ordered by
  activation mass; the heaviest is the main object (score 1.0), further components of enough
  area and mass are more instances, scored by their mass ratio.

A map whose maximum is ``<= 0`` carries no positive evidence and yields no box; a constant positive
map yields the whole image. :func:`nms` is class-aware NMS (``torchvision.ops.batched_nms``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torchvision.ops import batched_nms

__all__ = [
    "component_boxes",
    "largest_component_box",
    "nms",
    "normalize_map",
    "object_component_boxes",
    "upsample_map",
    "working_shape",
]

_EIGHT = np.ones((3, 3), dtype=bool)


def working_shape(image_size: tuple[int, int], working_size: int) -> tuple[int, int]:
    """(height, width) of the working grid: longest side ``working_size``, image aspect kept.

    Args:
        image_size: (width, height) of the original image in pixels.
    """
    w, h = image_size
    if w <= 0 or h <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {image_size}")
    if working_size < 2:
        raise ValueError(f"working_size must be >= 2, got {working_size}")
    scale = working_size / max(w, h)
    return max(1, round(h * scale)), max(1, round(w * scale))


@lru_cache(maxsize=512)
def _interp_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps along one axis, half-pixel centres (``align_corners=False``): output ``j``
    is ``(1 - frac[j]) * x[i0[j]] + frac[j] * x[i1[j]]`` (``int64[n_out]``, ``int64[n_out]``,
    ``float32[n_out]``)."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = (src - i0).astype(np.float32)
    for a in (i0, i1, frac):
        a.setflags(write=False)
    return i0, i1, frac


def upsample_map(cam: Tensor, shape: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of ``Tensor[h, w]`` to ``Tensor[H, W]`` float32 on the CPU.

    Same values as ``F.interpolate(..., mode="bilinear", align_corners=False)``, computed as two
    separable gather-and-blend passes in numpy (no BLAS call, whose worker threads would compete
    with the model's: cheaper than torch for one small map).
    """
    if cam.dim() != 2:
        raise ValueError(f"map must be Tensor[h, w], got shape {tuple(cam.shape)}")
    arr = cam.detach().cpu().numpy().astype(np.float32, copy=False)
    r0, r1, rf = _interp_taps(int(shape[0]), arr.shape[0])
    c0, c1, cf = _interp_taps(int(shape[1]), arr.shape[1])
    top = arr[r0]
    rows = top + (arr[r1] - top) * rf[:, None]  # [H, w]; a + (b - a) * t keeps constant maps exact
    left = rows[:, c0]
    return torch.from_numpy(left + (rows[:, c1] - left) * cf)


def normalize_map(cam: Tensor, mode: str = "max") -> Tensor | None:
    """Scale a map so its maximum is 1; ``None`` if it carries no evidence.

    ``mode="max"``: ``cam / max`` (negative values stay negative: below any threshold > 0);
    ``None`` if ``max <= 0``. ``mode="minmax"``: ``(cam - min) / (max - min)``; a constant map
    becomes all ones if positive, ``None`` otherwise.
    """
    if mode not in ("max", "minmax"):
        raise ValueError(f"normalize mode must be 'max' or 'minmax', got {mode!r}")
    arr = cam.detach().cpu().numpy()
    hi = float(arr.max()) if arr.size else 0.0
    if not np.isfinite(hi) or not np.isfinite(arr).all():
        raise ValueError("map contains non-finite values")
    if mode == "max":
        return torch.from_numpy(arr / np.float32(hi)) if hi > 0 else None
    lo = float(arr.min())
    if hi - lo <= 1e-12 * max(abs(hi), 1.0):
        return torch.ones_like(cam) if hi > 0 else None
    return torch.from_numpy((arr - np.float32(lo)) / np.float32(hi - lo))


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    labels, count = ndimage.label(mask, structure=_EIGHT)
    return labels, int(count)


def _scale_boxes(slices: list[tuple[slice, ...]], grid: tuple[int, int], image_size: tuple[int, int]) -> Tensor:
    gh, gw = grid
    w, h = image_size
    if not slices:
        return torch.zeros((0, 4), dtype=torch.float32)
    arr = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices], dtype=np.float64)
    arr[:, [0, 2]] *= w / gw
    arr[:, [1, 3]] *= h / gh
    arr[:, [0, 2]] = arr[:, [0, 2]].clip(0, w)
    arr[:, [1, 3]] = arr[:, [1, 3]].clip(0, h)
    return torch.from_numpy(arr.astype(np.float32))


def largest_component_box(norm: Tensor, image_size: tuple[int, int], *, threshold: float = 0.2) -> tuple[Tensor, Tensor]:
    """Paper rule on a normalised working-resolution map.

    Args:
        norm: ``Tensor[H, W]`` map scaled to max 1 (see :func:`normalize_map`), working grid.
        image_size: (width, height) of the original image in pixels.
        threshold: fraction of the maximum.

    Returns:
        ``(boxes[M, 4], scores[M])`` with M in {0, 1}; xyxy original pixels; score = mean
        normalised activation inside the box's component.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    arr = norm.detach().float().cpu().numpy()
    labels, count = _components(arr >= threshold)
    if count == 0:
        return torch.zeros((0, 4)), torch.zeros((0,))
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    best = int(areas.argmax()) + 1
    sl = ndimage.find_objects(labels, max_label=best)[best - 1]
    assert sl is not None
    score = float(arr[labels == best].mean())
    return _scale_boxes([sl], arr.shape, image_size), torch.tensor([score], dtype=torch.float32)


def component_boxes(
    norm: Tensor, image_size: tuple[int, int], *, threshold: float = 0.2, min_area: float = 0.01
) -> tuple[Tensor, Tensor]:
    """Every 8-connected component above ``threshold`` covering at least ``min_area`` of the image.

    Args:
        norm: ``Tensor[H, W]`` map scaled to max 1, working grid.
        image_size: (width, height) of the original image in pixels.
        threshold: fraction of the maximum.
        min_area: minimum component area as a fraction of the image area (0..1).

    Returns:
        ``(boxes[M, 4], scores[M])`` sorted by score descending; score = the component's peak
        normalised activation (1.0 for the component holding the global maximum).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if not 0.0 <= min_area <= 1.0:
        raise ValueError(f"min_area must be in [0, 1], got {min_area}")
    arr = norm.detach().float().cpu().numpy()
    labels, count = _components(arr >= threshold)
    if count == 0:
        return torch.zeros((0, 4)), torch.zeros((0,))
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    peaks = ndimage.maximum(arr, labels=labels, index=np.arange(1, count + 1))
    peaks = np.atleast_1d(np.asarray(peaks, dtype=np.float64))
    keep = np.nonzero(areas >= min_area * arr.size)[0]
    if keep.size == 0:  # the largest component always survives: a map above threshold has an object
        keep = np.array([int(areas.argmax())])
    keep = keep[np.argsort(-peaks[keep], kind="stable")]
    objects = ndimage.find_objects(labels)
    slices = [objects[i] for i in keep]
    boxes = _scale_boxes(slices, arr.shape, image_size)
    return boxes, torch.from_numpy(peaks[keep].astype(np.float32))


def object_component_boxes(
    norm: Tensor,
    image_size: tuple[int, int],
    *,
    threshold: float,
    min_area: float = 0.01,
    secondary_mass: float = 0.25,
) -> tuple[Tensor, Tensor]:
    """Components above ``threshold`` ordered by activation mass (sum of the map inside).

    The component with the largest mass is the main object (score 1.0); every further component
    whose area is at least ``min_area`` of the image and whose mass is at least
    ``secondary_mass`` of the main one is another instance, scored by its mass ratio (0..1).

    Args:
        norm: ``Tensor[H, W]`` normalised map on the working grid.
        image_size: (width, height) of the original image in pixels.
        threshold: absolute threshold on ``norm`` (0..1).

    Returns:
        ``(boxes[M, 4], scores[M])`` xyxy original pixels, scores descending.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if not 0.0 <= min_area <= 1.0 or not 0.0 <= secondary_mass <= 1.0:
        raise ValueError(f"min_area and secondary_mass must be in [0, 1], got {min_area}, {secondary_mass}")
    arr = norm.detach().float().cpu().numpy()
    mask = arr >= threshold
    labels, count = _components(mask)
    if count == 0:
        return torch.zeros((0, 4)), torch.zeros((0,))
    inside = labels[mask]  # component of each pixel above threshold (the only labelled ones)
    mass = np.bincount(inside, weights=np.clip(arr[mask], 0, None), minlength=count + 1)[1:]
    areas = np.bincount(inside, minlength=count + 1)[1:]
    order = np.argsort(-mass, kind="stable")
    main = order[0]
    ratio = mass / max(mass[main], 1e-12)
    keep = [int(main)] + [int(i) for i in order[1:] if areas[i] >= min_area * arr.size and ratio[i] >= secondary_mass]
    objects = ndimage.find_objects(labels)
    boxes = _scale_boxes([objects[i] for i in keep], arr.shape, image_size)
    scores = torch.tensor([1.0] + [float(ratio[i]) for i in keep[1:]], dtype=torch.float32)
    return boxes, scores


def nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS. ``boxes[N, 4]`` xyxy, ``scores[N]``, ``labels[N]`` -> kept indices ``[M]``
    sorted by decreasing score (``torchvision.ops.batched_nms``)."""
    if boxes.numel() == 0:
        return torch.zeros((0,), dtype=torch.long, device=boxes.device)
    return batched_nms(boxes.float(), scores.float(), labels, float(iou_threshold))
