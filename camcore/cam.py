"""Class activation maps computed in the same forward pass as the logits.

For a :class:`~camcore.models.GapClassifier` with features ``f: Tensor[N, C, h, w]`` and classifier
``W: Tensor[K, C]``, ``b: Tensor[K]``:

    logits[n, c] = W[c] . mean_xy f[n, :, x, y] + b[c]
    cam[n, c, x, y] = W[c] . f[n, :, x, y]                       (Zhou et al., CVPR 2016)

so ``cam.mean(xy) + b == logits`` exactly (up to float rounding). No backward pass, no hooks, no
second forward; everything stays on the model's device and works under ``torch.autocast``.

Maps are produced per *(image, class) pair*: ``image_index: Tensor[P]``, ``class_index: Tensor[P]``
so that each image can ask for a different number of classes (its tags, or its top-k).

The map methods that run this forward pass (:mod:`camcore.methods`) build on these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CamOutput", "align_maps", "class_activation_maps", "select_pairs"]

def class_activation_maps(features: Tensor, weight: Tensor, image_index: Tensor, class_index: Tensor) -> Tensor:
    """CAM for each (image, class) pair.

    Args:
        features: ``Tensor[N, C, h, w]`` last feature map.
        weight: ``Tensor[K, C]`` classifier weights.
        image_index: ``Tensor[P]`` long, image of each pair (``0 <= i < N``).
        class_index: ``Tensor[P]`` long, class of each pair (``0 <= c < K``).

    Returns:
        ``Tensor[P, h, w]`` raw (un-normalised, bias-free) maps in the features' dtype.
    """
    if features.dim() != 4:
        raise ValueError(f"features must be Tensor[N, C, h, w], got shape {tuple(features.shape)}")
    if image_index.numel() == 0:
        return features.new_zeros((0, features.shape[2], features.shape[3]))
    w = weight.to(features.dtype)[class_index]  # [P, C]
    return torch.einsum("pc,pchw->phw", w, features[image_index])


def align_maps(maps: Tensor, shift_cells: float) -> Tensor:
    """Resample ``maps: Tensor[P, h, w]`` so cell j's value is the map at ``j + shift_cells``.

    Strided convolutions place feature cell ``j`` at ``(j + 0.5) * stride + shift`` input pixels
    (``ModelSpec.map_shift``), while upsampling to the image assumes ``(j + 0.5) * stride``.
    Calling this with ``shift_cells = -shift / stride`` makes a bilinear upsampling line the map up
    with the image (linear interpolation, edges clamped). ``shift_cells == 0`` returns ``maps``.
    """
    if shift_cells == 0 or maps.numel() == 0:
        return maps
    p, h, w = maps.shape
    dev = maps.device
    ys = (torch.arange(h, device=dev, dtype=torch.float32) + shift_cells).clamp(0, h - 1)
    xs = (torch.arange(w, device=dev, dtype=torch.float32) + shift_cells).clamp(0, w - 1)
    m = maps.float()
    y0 = ys.floor().long()
    y1 = (y0 + 1).clamp(max=h - 1)
    fy = (ys - y0.float()).view(1, h, 1)
    m = m[:, y0, :] * (1 - fy) + m[:, y1, :] * fy
    x0 = xs.floor().long()
    x1 = (x0 + 1).clamp(max=w - 1)
    fx = (xs - x0.float()).view(1, 1, w)
    return m[:, :, x0] * (1 - fx) + m[:, :, x1] * fx


def select_pairs(
    logits: Tensor, classes: Sequence[Sequence[int]] | None, *, top_k: int = 1
) -> tuple[Tensor, Tensor]:
    """(image, class) pairs to map: each image's given classes, or its ``top_k`` predicted ones.

    Args:
        logits: ``Tensor[N, K]``.
        classes: per image a list of class indices (may be empty), or ``None`` for top-k.
        top_k: classes per image when ``classes`` is ``None`` (clamped to K).

    Returns:
        ``(image_index[P], class_index[P])`` long tensors on ``logits.device``.
    """
    n, k = logits.shape
    device = logits.device
    if classes is None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        kk = min(top_k, k)
        cls = logits.detach().float().topk(kk, dim=1).indices  # [N, kk]
        img = torch.arange(n, device=device).repeat_interleave(kk)
        return img, cls.reshape(-1)
    if len(classes) != n:
        raise ValueError(f"classes has {len(classes)} entries for {n} images")
    img_list: list[int] = []
    cls_list: list[int] = []
    for i, cs in enumerate(classes):
        for c in cs:
            c = int(c)
            if not 0 <= c < k:
                raise ValueError(f"class index {c} out of range for {k} classes (image {i})")
            img_list.append(i)
            cls_list.append(c)
    return (
        torch.tensor(img_list, dtype=torch.long, device=device),
        torch.tensor(cls_list, dtype=torch.long, device=device),
    )


@dataclass
class CamOutput:
    """Result of a map method's forward pass (:mod:`camcore.methods`; tensors on the model's device).

    Attributes:
        logits: ``Tensor[N, K]`` float32.
        maps: ``Tensor[P, h, w]`` float32 raw maps, one per pair.
        image_index: ``Tensor[P]`` image of each map.
        class_index: ``Tensor[P]`` class of each map.
        features: ``Tensor[N, C, h, w]`` the feature map (kept only if asked).
        codes: ``Tensor[N, d, h, w]`` float32 descriptor codes of each image
            (:mod:`camcore.descriptor_basis`), or ``None`` when the method has no basis.
    """

    logits: Tensor
    maps: Tensor
    image_index: Tensor
    class_index: Tensor
    features: Tensor | None = None
    codes: Tensor | None = None
