"""A collection's descriptor basis: its leading principal components, to store each image compactly.

The backbone descriptors of an image (``Tensor[C, h, w]``, C = 320 for EfficientNet-Lite0) are
too large to keep for every image (125 KB in float16 at 14 x 14). Projected on the
:data:`CODE_DIMENSIONS` leading principal components of the training images' descriptors and
whitened, they become the image's *codes* ``Tensor[d, h, w]`` (6.4 KB): enough for a reviewer's
boxes to teach a location map without another model pass (:mod:`camcore.review_fit`).

The basis is fitted from streamed moments (pixel count, sum, sum of outer products) over every
training image once, class-agnostically: :class:`camcore.objectness.DdtAccumulator` keeps them
beside its per-class statistics, and :class:`DescriptorBasis` is stored with the objectness
statistics (``ModelSpec.extra["objectness"]["basis"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["CODE_DIMENSIONS", "DescriptorBasis", "basis_from_moments"]

#: Principal components kept per image (16 x 14 x 14 float16 codes: 6.4 KB per image).
CODE_DIMENSIONS = 16


@dataclass(frozen=True)
class DescriptorBasis:
    """``codes[k, y, x] = (f[:, y, x] - mean) . components[k] / scale[k]``.

    Attributes:
        mean: ``Tensor[C]`` mean descriptor over the training images' pixels.
        components: ``Tensor[d, C]`` orthonormal leading principal components, largest first.
        scale: ``Tensor[d]`` standard deviation along each component (codes have unit variance).
    """

    mean: Tensor
    components: Tensor
    scale: Tensor

    def __post_init__(self) -> None:
        if self.mean.dim() != 1 or self.components.dim() != 2 or self.components.shape[1] != self.mean.shape[0]:
            raise ValueError(f"mean must be [C] and components [d, C], got {tuple(self.mean.shape)} and "
                             f"{tuple(self.components.shape)}")
        if self.scale.shape != (self.components.shape[0],) or not bool((self.scale > 0).all()):
            raise ValueError(f"scale must be [d]={self.components.shape[0]} positive values, got {self.scale.tolist()}")

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    @property
    def dimensions(self) -> int:
        return int(self.components.shape[0])

    def project(self, descriptors: Tensor) -> Tensor:
        """``descriptors[N, C, h, w]`` -> codes ``Tensor[N, d, h, w]`` float32 (on their device)."""
        if descriptors.dim() != 4 or descriptors.shape[1] != self.channels:
            raise ValueError(f"descriptors must be Tensor[N, {self.channels}, h, w], got {tuple(descriptors.shape)}")
        dev = descriptors.device
        p = self.components.to(dev) / self.scale.to(dev)[:, None]  # [d, C]
        offset = p @ self.mean.to(dev)  # [d]
        return torch.einsum("nchw,dc->ndhw", descriptors.float(), p) - offset[None, :, None, None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (float lists, 6 significant digits)."""
        return {
            "mean": [float(f"{v:.6g}") for v in self.mean.tolist()],
            "components": [[float(f"{v:.6g}") for v in row] for row in self.components.tolist()],
            "scale": [float(f"{v:.6g}") for v in self.scale.tolist()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DescriptorBasis:
        """Inverse of :meth:`to_dict`; malformed data raises ``ValueError``."""
        try:
            return cls(torch.tensor(data["mean"], dtype=torch.float32), torch.tensor(data["components"], dtype=torch.float32),
                       torch.tensor(data["scale"], dtype=torch.float32))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"malformed descriptor basis: {exc}") from exc


def basis_from_moments(count: float, total: Tensor, outer: Tensor, dimensions: int = CODE_DIMENSIONS) -> DescriptorBasis | None:
    """The basis of pixels with ``count`` descriptors, ``total[C]`` their sum and ``outer[C, C]``
    the sum of their outer products (float64); ``None`` with fewer than two pixels or no spread.

    Keeps at most ``dimensions`` components, and only those with positive variance."""
    if count < 2:
        return None
    mu = total.double() / count
    cov = outer.double() / count - torch.outer(mu, mu)
    evals, vecs = torch.linalg.eigh(cov)  # ascending
    keep = min(dimensions, int((evals > evals[-1].clamp_min(0) * 1e-9).sum()))
    if keep < 1 or float(evals[-1]) <= 0:
        return None
    order = torch.arange(len(evals) - 1, len(evals) - 1 - keep, -1)
    return DescriptorBasis(mu.float(), vecs[:, order].T.contiguous().float(), evals[order].sqrt().float())
