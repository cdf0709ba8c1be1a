"""The base of every map method: one forward pass giving logits and the maps of chosen pairs.

A :class:`MapMethod` is bound to one model. The forward hooks it reads are registered when it is
entered (``with method:``, or for the length of one call) and removed when it is left, so a model
never keeps a hook of a method that is done with it. A subclass says which layers' inputs to keep
(:meth:`MapMethod.hooked_inputs`) and how the maps follow from the features, the logits and what
the hooks kept (:meth:`MapMethod.maps`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from camcore.cam import CamOutput, select_pairs
from camcore.models import GapClassifier, ModelSpec

__all__ = ["MapMethod"]


class MapMethod(ABC):
    """Maps of (image, class) pairs from a :class:`~camcore.models.GapClassifier`'s forward pass.

    Args:
        model: the classifier (put it in eval mode yourself).
        spec: its spec, for methods that read fitted statistics from ``spec.extra``.

    Attributes:
        captured: what the hooks kept during the current forward pass, by name.
    """

    def __init__(self, model: GapClassifier, spec: ModelSpec | None = None) -> None:
        self.model = model
        self.spec = spec
        self.captured: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []
        self._depth = 0

    def hooked_inputs(self) -> dict[str, nn.Module]:
        """``{name: module}`` whose input each forward pass keeps in :attr:`captured` (none here)."""
        return {}

    def _keep_input(self, module: nn.Module, name: str) -> None:
        """Keep ``module``'s input of each forward pass as ``captured[name]``."""

        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            self.captured[name] = args[0]

        self._handles.append(module.register_forward_pre_hook(hook))

    def remove_hooks(self) -> None:
        """Remove every hook of this method and forget what they kept."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.captured.clear()

    def __enter__(self) -> MapMethod:
        if self._depth == 0:
            for name, module in self.hooked_inputs().items():
                self._keep_input(module, name)
        self._depth += 1
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.remove_hooks()

    @abstractmethod
    def maps(self, features: Tensor, logits: Tensor, image_index: Tensor, class_index: Tensor) -> Tensor:
        """``Tensor[P, h, w]`` maps of the pairs ``(image_index[P], class_index[P])`` from
        ``features[N, C, h, w]``, ``logits[N, K]`` and :attr:`captured`."""

    def codes(self, features: Tensor) -> Tensor | None:
        """``Tensor[N, d, h, w]`` descriptor codes of the images of the current forward pass, or
        ``None`` (this base method keeps none; see :mod:`camcore.descriptor_basis`)."""
        return None

    @torch.no_grad()
    def __call__(self, x: Tensor, classes: Sequence[Sequence[int]] | None = None, *, top_k: int = 1,
                 keep_features: bool = False) -> CamOutput:
        """One forward pass giving logits and the maps of the chosen (image, class) pairs.

        Args:
            x: ``Tensor[N, 3, H, W]`` normalised input on the model's device.
            classes: per image the classes to map, or ``None`` for the ``top_k`` predicted ones.
            keep_features: also return the feature map.

        Works under ``torch.autocast``; logits and maps are returned as float32.
        """
        with self:
            feats = self.model.features(x)
            logits = self.model.head(feats)
            image_index, class_index = select_pairs(logits, classes, top_k=top_k)
            maps = self.maps(feats, logits, image_index, class_index)
            codes = self.codes(feats)
        return CamOutput(logits=logits.float(), maps=maps.float(), image_index=image_index, class_index=class_index,
                         features=feats if keep_features else None, codes=codes)
