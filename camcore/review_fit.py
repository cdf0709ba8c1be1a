"""Fitting a review map (:mod:`camcore.boxes.review_map`) on reviewed boxes, and its honest maps.

Each reviewed (image, class) gives one example per map cell: the cell's descriptor codes and
scaled class map value, labelled positive when the cell's centre lies inside a reviewed box of the
class. A logistic regression with a weak ridge penalty (:data:`RIDGE`, in cells) fits them; a
reviewed (image, class) gives 196 cells at 14 x 14, so 20 reviewed images give thousands of cells
for 17 weights, and no per-collection setting is needed.

:func:`cross_fitted_maps` gives each reviewed image's review maps from a fit *without* that image
(:data:`MAX_FOLDS` folds at most), so calibration can compare the learned maps with the plain ones
on the reviewed images without the learned maps having seen them.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

import torch
from torch import Tensor

from camcore.boxes.review_map import ReviewMap, cell_features

__all__ = ["MAX_FOLDS", "RIDGE", "cross_fitted_maps", "fit_review_map", "inside_boxes", "review_folds", "training_cells"]

RIDGE = 1.0  # weight of the ridge penalty, in cells (sum of squared weights x RIDGE / cells)
MAX_FOLDS = 10  # cross-fitting folds at most (one per reviewed image below that)

Key = TypeVar("Key", bound=Hashable)


def inside_boxes(grid: tuple[int, int], image_size: tuple[int, int], boxes: Tensor) -> Tensor:
    """``Tensor[h, w]`` bool: whether each cell centre of an ``(h, w)`` grid over an image of
    ``image_size`` (width, height) pixels lies inside one of ``boxes[M, 4]`` (xyxy pixels)."""
    h, w = grid
    width, height = image_size
    cx = (torch.arange(w, dtype=torch.float64) + 0.5) / w * width
    cy = (torch.arange(h, dtype=torch.float64) + 0.5) / h * height
    out = torch.zeros(h, w, dtype=torch.bool)
    for x1, y1, x2, y2 in boxes.double().reshape(-1, 4).tolist():
        out |= ((cx >= x1) & (cx <= x2))[None, :] & ((cy >= y1) & (cy <= y2))[:, None]
    return out


def _image_cells(
    codes_by_image: Mapping[Key, Tensor],
    maps_by_image: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth_by_class: Mapping[int, Mapping[Key, Tensor]],
) -> dict[Key, tuple[Tensor, Tensor]]:
    """Per reviewed image with codes: ``(X[M, d + 1] float64, y[M] float64)``, one row per map cell
    of each of its reviewed classes with a map."""
    xs: dict[Key, list[Tensor]] = {}
    ys: dict[Key, list[Tensor]] = {}
    for cls, per_image in sorted(truth_by_class.items()):
        for key, boxes in per_image.items():
            if key not in codes_by_image or cls not in maps_by_image.get(key, {}):
                continue
            class_map = maps_by_image[key][cls]
            xs.setdefault(key, []).append(cell_features(codes_by_image[key], class_map))
            width, height = image_sizes[key]
            grid = (int(class_map.shape[0]), int(class_map.shape[1]))
            ys.setdefault(key, []).append(inside_boxes(grid, (int(width), int(height)), boxes).reshape(-1).double())
    return {key: (torch.cat(xs[key]), torch.cat(ys[key])) for key in xs}


def _stacked(cells: Mapping[Key, tuple[Tensor, Tensor]], keys: set[Key] | None = None) -> tuple[Tensor, Tensor]:
    """The rows of ``cells`` (of the images in ``keys`` when given) stacked; ``(0 x 0, 0)`` when none."""
    chosen = [v for k, v in cells.items() if keys is None or k in keys]
    if not chosen:
        return torch.zeros(0, 0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    return torch.cat([x for x, _ in chosen]), torch.cat([y for _, y in chosen])


def training_cells(
    codes_by_image: Mapping[Key, Tensor],
    maps_by_image: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth_by_class: Mapping[int, Mapping[Key, Tensor]],
    keys: set[Key] | None = None,
) -> tuple[Tensor, Tensor]:
    """``(X[M, d + 1] float64, y[M] float64)``: one row per map cell of every reviewed (image,
    class) with codes and a map (only images in ``keys`` when given)."""
    return _stacked(_image_cells(codes_by_image, maps_by_image, image_sizes, truth_by_class), keys)


def fit_review_map(cells: Tensor, labels: Tensor, *, ridge: float = RIDGE) -> ReviewMap | None:
    """Logistic regression of ``labels[M]`` (0/1) on ``cells[M, d + 1]`` (see the module docstring);
    ``None`` when there are no cells or only one label."""
    if cells.dim() != 2 or cells.shape[0] != labels.shape[0] or cells.shape[1] < 2:
        raise ValueError(f"cells must be Tensor[M, d + 1] with one label each, got {tuple(cells.shape)} and {tuple(labels.shape)}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if cells.shape[0] == 0 or labels.min() == labels.max():
        return None
    x, y = cells.double(), labels.double()
    weights = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weights, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weights + bias, y)
        loss = loss + ridge * (weights * weights).sum() / len(y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w = weights.detach().tolist()
    return ReviewMap(tuple(w[:-1]), w[-1], float(bias.detach()))


def review_folds(truth_by_class: Mapping[int, Mapping[Key, Tensor]], available: set[Key]) -> list[list[Key]]:
    """The reviewed images of ``available`` in :data:`MAX_FOLDS` folds at most (one image each
    below that): image ``j`` of the images sorted by key goes to fold ``j % folds``."""
    reviewed = sorted({k for per_image in truth_by_class.values() for k in per_image if k in available}, key=repr)
    count = min(MAX_FOLDS, len(reviewed))
    return [reviewed[fold::count] for fold in range(count)]


def cross_fitted_maps(
    codes_by_image: Mapping[Key, Tensor],
    maps_by_image: Mapping[Key, Mapping[int, Tensor]],
    image_sizes: Mapping[Key, tuple[int, int]],
    truth_by_class: Mapping[int, Mapping[Key, Tensor]],
) -> dict[Key, dict[int, Tensor]]:
    """Review maps of every reviewed image with codes (all its maps' classes), each from a review
    map fitted on the other folds' images; an image whose fit has no data keeps its raw maps."""
    folds = review_folds(truth_by_class, set(codes_by_image) & set(maps_by_image))
    per_image = _image_cells(codes_by_image, maps_by_image, image_sizes, truth_by_class)  # once, not per fold
    out: dict[Key, dict[int, Tensor]] = {}
    for held in folds:
        cells, labels = _stacked(per_image, set(per_image) - set(held))
        review = fit_review_map(cells, labels) if len(labels) else None
        for key in held:
            maps = maps_by_image[key]
            out[key] = dict(maps) if review is None else {c: review.apply(codes_by_image[key], m) for c, m in maps.items()}
    return out
