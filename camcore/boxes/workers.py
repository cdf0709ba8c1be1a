"""The box rule of many images off the caller's thread: worker processes fed one batch at a time.

:class:`BoxWorkers` runs :func:`camcore.boxes.from_maps.boxes_from_maps` (the same function, the same
parameters, hence the same boxes) for the images of a batch, split over ``processes`` worker
processes, while the caller goes on with the next batch's forward pass. With ``processes=0`` the
boxes are computed on the caller's thread when submitted (the CPU-only setting: there the forward
pass already uses every core).

Maps and boxes cross the process boundary as numpy arrays (a few hundred bytes per map), not as
torch tensors (which would travel as shared-memory handles, one file descriptor each).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from camcore.boxes.from_maps import boxes_from_maps
from camcore.boxes.params import BoxParams

__all__ = ["BoxJob", "BoxWorkers", "ImageBoxes", "MapsOfImage"]

#: ``(boxes[N, 4] xyxy pixels, scores[N], labels[N])`` of one image, on the CPU.
ImageBoxes = tuple[Tensor, Tensor, Tensor]


@dataclass
class MapsOfImage:
    """What the box rule needs of one image.

    Attributes:
        maps: class index -> raw low-resolution map ``Tensor[h, w]`` (CPU, float32).
        image_size: (width, height) of the image in pixels.
        class_scores: ``Tensor[K]`` class probabilities to multiply box scores by (predicted,
            untagged classes), or ``None``.
        codes: ``Tensor[d, h, w]`` the image's descriptor codes (for a review map), or ``None``.
    """

    maps: dict[int, Tensor]
    image_size: tuple[int, int]
    class_scores: Tensor | None = None
    codes: Tensor | None = None


_Wire = tuple[dict[int, np.ndarray], tuple[int, int], "np.ndarray | None", "np.ndarray | None"]


def _array(t: Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().float().cpu().numpy()


def _tensor(a: np.ndarray | None) -> Tensor | None:
    return None if a is None else torch.from_numpy(a)


def _boxes_of(params_dict: Mapping[str, object], items: Sequence[_Wire]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    params = BoxParams.from_dict(params_dict)
    out = []
    for maps, size, scores, codes in items:
        b, s, lab = boxes_from_maps({c: torch.from_numpy(m) for c, m in maps.items()}, size, params,
                                    class_scores=_tensor(scores), codes=_tensor(codes))
        out.append((b.numpy(), s.numpy(), lab.numpy()))
    return out


def _one_thread() -> None:
    torch.set_num_threads(1)  # a box worker is one core; its small tensor ops need no team


class BoxJob:
    """The boxes of one submitted batch; :meth:`result` waits for them (in submission order)."""

    def __init__(self, parts: list[Future[list[tuple[np.ndarray, np.ndarray, np.ndarray]]]] | None = None,
                 done: list[ImageBoxes] | None = None) -> None:
        self._parts = parts or []
        self._done = done

    def result(self) -> list[ImageBoxes]:
        if self._done is None:
            self._done = [(torch.from_numpy(b), torch.from_numpy(s), torch.from_numpy(lab))
                          for part in self._parts for b, s, lab in part.result()]
        return self._done


class BoxWorkers:
    """``processes`` box-rule worker processes (started on first use), or none (``0``: inline).

    Args:
        processes: worker processes; ``0`` computes boxes on the caller's thread.
    """

    def __init__(self, processes: int = 0) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        if multiprocessing.current_process().daemon:  # a daemonic process may not start children
            processes = 0
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, params: BoxParams, images: Sequence[MapsOfImage]) -> BoxJob:
        """Start the boxes of ``images`` with ``params``."""
        if self.processes == 0 or not images:
            return BoxJob(done=[boxes_from_maps(im.maps, im.image_size, params, class_scores=im.class_scores, codes=im.codes)
                                for im in images])
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("fork"),
                                             initializer=_one_thread)
        wire: list[_Wire] = [({c: m.detach().float().cpu().numpy() for c, m in im.maps.items()}, im.image_size,
                              _array(im.class_scores), _array(im.codes)) for im in images]
        params_dict = params.to_dict()
        bounds = np.linspace(0, len(wire), min(self.processes, len(wire)) + 1).round().astype(int).tolist()
        return BoxJob(parts=[self._pool.submit(_boxes_of, params_dict, wire[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])

    def close(self) -> None:
        """Stop the worker processes (boxes are computed inline afterwards)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.processes = 0
