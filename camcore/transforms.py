"""Images to network input: resizing into a uint8 batch, then normalising on the device.

Every image is resized to ``input_size x input_size`` (bilinear, aspect ratio *not* kept: the
whole image is seen, and maps map back to the image per axis) into a uint8 CPU batch
(:func:`preprocess`, :func:`resize_into`); :class:`Normalizer` moves it to the device and
normalises it in one pass. :mod:`camcore.streaming`, :mod:`camcore.training` and
:class:`camcore.localizer.Localizer` all build their batches here, so a batch is the same bytes
whichever path built it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from camcore.models import ModelSpec

__all__ = ["Normalizer", "preprocess", "resize_into"]


def resize_into(img: Image.Image, input_size: int, out: np.ndarray) -> None:
    """Write ``img`` resized to ``input_size x input_size`` into ``out`` (uint8 ``[3, S, S]``).

    RGB pixels, torch's antialiased bilinear filter (align_corners=False); an image already at the
    input size is copied as it is. :func:`preprocess` and :mod:`camcore.streaming` share it, so a
    batch is the same bytes whichever path built it.
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    pixels = np.array(img, dtype=np.uint8)  # [H, W, 3]
    if pixels.shape[:2] == (input_size, input_size):
        out[...] = pixels.transpose(2, 0, 1)
    else:
        chw = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)  # [1, 3, H, W] view
        resized = F.interpolate(chw, size=(input_size, input_size), mode="bilinear", antialias=True, align_corners=False)
        out[...] = resized[0].numpy()


def preprocess(images: Sequence[Image.Image], input_size: int, *, executor: Executor | None = None, parts: int = 2) -> Tensor:
    """Resize each image to ``input_size x input_size`` (bilinear, RGB) -> ``Tensor[N, 3, S, S]`` uint8.

    Resizing is torch's antialiased bilinear filter on uint8 pixels (the same filter as PIL's
    ``BILINEAR``, within one grey level, at about half its cost). The batch is contiguous NCHW:
    that filter writes NCHW, so each image is one plain copy; :class:`Normalizer` turns it into
    the normalised (channels-last) float batch in one pass. With an ``executor`` (threads) the
    batch is split into ``parts`` contiguous parts filled in parallel: the filter and the copies
    release the GIL and start no OpenMP team (the copy is numpy's), so two threads do a batch
    about 1.8x faster on two cores.
    """
    batch = torch.empty((len(images), 3, input_size, input_size), dtype=torch.uint8)
    out = batch.numpy()

    def fill(start: int, stop: int) -> None:
        for i in range(start, stop):
            resize_into(images[i], input_size, out[i])

    if executor is None or parts < 2 or len(images) < 2:
        fill(0, len(images))
        return batch
    bounds = np.linspace(0, len(images), min(parts, len(images)) + 1).round().astype(int).tolist()
    for future in [executor.submit(fill, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]:
        future.result()
    return batch


class Normalizer:
    """uint8 ``Tensor[N, 3, S, S]`` (0..255, any memory layout) -> normalised float32 on ``device``.

    ``(x / 255 - mean) / std`` per channel, computed as one fused multiply-add
    (``x * (1 / (255 std)) - mean / std``) written straight into a buffer of the wanted
    ``memory_format``: one pass over the pixels instead of a convert, two arithmetic passes and a
    layout copy.

    Args:
        spec: gives ``mean`` and ``std`` (per channel, for pixels scaled to 0..1).
        device: where the float batch goes (a CUDA batch is copied from pinned memory, async).
        memory_format: layout of the result (``torch.channels_last`` for the prepared network).
    """

    def __init__(self, spec: ModelSpec, device: str | torch.device = "cpu",
                 memory_format: torch.memory_format = torch.contiguous_format) -> None:
        self.device = torch.device(device)
        self.memory_format = memory_format
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._scale = (1.0 / (255.0 * std)).to(self.device)
        self._shift = (-mean / std).to(self.device)

    def __call__(self, batch: Tensor) -> Tensor:
        if batch.dtype != torch.uint8 or batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"batch must be uint8 Tensor[N, 3, S, S], got {batch.dtype} {tuple(batch.shape)}")
        if self.device.type == "cuda" and not batch.is_pinned():
            batch = batch.pin_memory()
        x = batch.to(self.device, non_blocking=True)
        out = torch.empty(x.shape, dtype=torch.float32, device=self.device, memory_format=self.memory_format)
        return torch.addcmul(self._shift, x, self._scale, out=out)
