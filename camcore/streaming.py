"""Files in, network-sized uint8 batches out, decoded ahead of the forward pass.

:func:`stream_batches` turns a sequence of image sources into :class:`LoadedBatch` es of
``batch_size`` consecutive sources each. Every file goes through
:func:`camcore.images.load_image` (EXIF rotation, CMYK/PNG/16-bit modes, truncated JPEGs, the
decompression-bomb guards, reduced-scale JPEG decoding no smaller than the network input) and
:func:`camcore.transforms.resize_into`, so a batch holds the same bytes whichever way it was built;
a file that cannot be loaded is reported in ``failures`` at its position, never fatal.

Two ways to build the batches (:func:`loader_kind` picks one per device):

- ``"processes"``: a ``torch.utils.data.DataLoader`` whose worker processes each decode and
  resize whole batches (``prefetch`` batches per worker in flight), so that the next batches are
  ready while the caller runs the current one; for a CUDA consumer the batches arrive in pinned
  memory (asynchronous host-to-device copies). This is the GPU worker's path: the host work of
  one image costs a few CPU-milliseconds and a GPU wants thousands of images a second.
- ``"threads"``: decode, then resize, each on the caller's thread pool, in their own phase
  (nothing overlaps the forward pass). On a CPU-only machine the forward pass itself wants every
  core, and work beside it stalls its OpenMP threads (``bench/pipeline.py --loader`` measures
  both); in-memory ``PIL`` images and daemonic processes (which may not start children) use it
  too.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from camcore.images import (
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageLoadError,
    ImageSource,
    load_image,
    load_images,
    original_size,
)
from camcore.transforms import preprocess, resize_into

__all__ = ["LOADER_KINDS", "LoadedBatch", "default_loader_workers", "loader_kind", "stream_batches"]

#: The ways :func:`stream_batches` can build batches.
LOADER_KINDS = ("processes", "threads")


@dataclass
class LoadedBatch:
    """``batch_size`` consecutive sources, decoded and resized.

    Attributes:
        start: position in the source sequence of the batch's first source.
        positions: positions (ascending) of the sources that loaded, one per row of ``pixels``.
        pixels: uint8 ``Tensor[n, 3, S, S]`` (RGB, contiguous NCHW; pinned for a CUDA consumer).
        sizes: (width, height) in pixels of each loaded file as displayed
            (:func:`camcore.images.original_size`): boxes are expressed in these.
        failures: ``(position, error)`` of each source that could not be loaded.
    """

    start: int
    positions: list[int]
    pixels: Tensor
    sizes: list[tuple[int, int]]
    failures: list[tuple[int, ImageLoadError]] = field(default_factory=list)

    def pin_memory(self) -> LoadedBatch:
        """A copy with ``pixels`` in page-locked memory (the DataLoader calls this)."""
        return replace(self, pixels=self.pixels.pin_memory())


class _ResizedSources(Dataset[Any]):
    """Source ``i`` -> decoded and resized; a batch of indices -> one :class:`LoadedBatch`."""

    def __init__(self, sources: Sequence[ImageSource | Image.Image], input_size: int, max_pixels: int | None,
                 max_decode_bytes: int | None) -> None:
        self.sources = sources
        self.input_size = input_size
        self.max_pixels = max_pixels
        self.max_decode_bytes = max_decode_bytes

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> LoadedBatch:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> LoadedBatch:
        loaded: list[tuple[int, Image.Image]] = []
        failures: list[tuple[int, ImageLoadError]] = []
        for i in indices:
            source = self.sources[i]
            if isinstance(source, Image.Image):
                loaded.append((i, source))
                continue
            try:
                loaded.append((i, load_image(source, max_pixels=self.max_pixels, min_size=self.input_size,
                                             max_decode_bytes=self.max_decode_bytes)))
            except ImageLoadError as exc:
                failures.append((i, exc))
        s = self.input_size
        pixels = torch.empty((len(loaded), 3, s, s), dtype=torch.uint8)
        out = pixels.numpy()
        for row, (_i, img) in enumerate(loaded):
            resize_into(img, s, out[row])
        return LoadedBatch(start=indices[0] if indices else 0, positions=[i for i, _ in loaded], pixels=pixels,
                           sizes=[original_size(img) for _, img in loaded], failures=failures)


def _as_is(batch: Any) -> Any:
    """DataLoader collate: the dataset's ``__getitems__`` already built the :class:`LoadedBatch`."""
    return batch


def default_loader_workers() -> int:
    """Loader processes for a GPU worker: half of the usable cores (the other half computes boxes
    and runs the main process), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


def processes_allowed() -> bool:
    """Whether this process may start worker processes (a daemonic one, e.g. a Celery prefork
    child, may not)."""
    return not multiprocessing.current_process().daemon


def loader_kind(device: str | torch.device) -> str:
    """``"processes"`` for a CUDA device (decoding overlaps the forward pass), ``"threads"`` on a
    CPU (phased: the forward pass gets every core) or where processes cannot be started."""
    return "processes" if torch.device(device).type == "cuda" and processes_allowed() else "threads"


def _threaded_batches(sources: Sequence[ImageSource | Image.Image], input_size: int, batch_size: int,
                      executor: Executor | None, parts: int, max_pixels: int | None,
                      max_decode_bytes: int | None) -> Iterator[LoadedBatch]:
    for start in range(0, len(sources), batch_size):
        outcomes = load_images(sources[start : start + batch_size], max_pixels=max_pixels, min_size=input_size,
                               executor=executor, max_decode_bytes=max_decode_bytes)
        images = [(start + k, im) for k, im in enumerate(outcomes) if isinstance(im, Image.Image)]
        failures = [(start + k, err) for k, err in enumerate(outcomes) if isinstance(err, ImageLoadError)]
        pixels = preprocess([im for _, im in images], input_size, executor=executor, parts=parts)
        yield LoadedBatch(start=start, positions=[p for p, _ in images], pixels=pixels,
                          sizes=[original_size(im) for _, im in images], failures=failures)


def stream_batches(
    sources: Sequence[ImageSource | Image.Image],
    input_size: int,
    batch_size: int,
    *,
    kind: str = "threads",
    workers: int | None = None,
    executor: Executor | None = None,
    parts: int = 2,
    pin_memory: bool = False,
    prefetch: int = 2,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES,
) -> Iterator[LoadedBatch]:
    """Decode and resize ``sources`` into batches of ``batch_size`` consecutive sources, in order.

    Args:
        sources: image files (paths, bytes, binary file objects) or already loaded ``PIL`` images.
        input_size: side ``S`` in pixels of the network input.
        kind: ``"processes"`` (a DataLoader with ``workers`` processes, batches decoded ahead) or
            ``"threads"`` (phased, on ``executor`` split into ``parts``); see :func:`loader_kind`.
            In-memory images, a single worker or a daemonic process use ``"threads"``.
        workers: loader processes (default :func:`default_loader_workers`).
        pin_memory: deliver ``pixels`` in page-locked memory (for a CUDA consumer).
        prefetch: batches each loader process keeps ready ahead of the consumer.
        max_pixels, max_decode_bytes: the guards of :func:`camcore.images.load_image`.

    Yields:
        One :class:`LoadedBatch` per ``batch_size`` sources (the last may be shorter).
    """
    if kind not in LOADER_KINDS:
        raise ValueError(f"loader kind must be one of {LOADER_KINDS}, got {kind!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = default_loader_workers() if workers is None else workers
    n_batches = -(-len(sources) // batch_size)
    in_memory = any(isinstance(s, Image.Image) for s in sources)
    if kind == "threads" or workers < 1 or n_batches == 0 or in_memory or not processes_allowed():
        for batch in _threaded_batches(sources, input_size, batch_size, executor, parts, max_pixels, max_decode_bytes):
            yield batch.pin_memory() if pin_memory and torch.cuda.is_available() else batch
        return
    dataset = _ResizedSources(sources, input_size, max_pixels, max_decode_bytes)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=min(workers, n_batches),
                        collate_fn=_as_is, pin_memory=pin_memory and torch.cuda.is_available(),
                        prefetch_factor=prefetch)
    yield from loader
