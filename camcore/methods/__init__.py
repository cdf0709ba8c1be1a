"""Map methods by name: ``BoxParams.method`` selects one.

A method is a :class:`MapMethod` subclass (:mod:`camcore.methods.core`): bound to a model, it
runs one forward pass and returns the logits and the maps of the chosen (image, class) pairs,
owning the forward hooks it needs for that pass. The built-in methods are listed in
:data:`_MAP_METHODS` below; :func:`register_map_method` adds another.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from camcore.cam import CamOutput
from camcore.methods.cam import Cam
from camcore.methods.core import MapMethod
from camcore.methods.ddt_cam import DdtCam
from camcore.models import GapClassifier, ModelSpec

__all__ = ["Cam", "DdtCam", "MapMethod", "forward_with_cams", "map_method", "map_methods", "register_map_method"]

_MAP_METHODS: dict[str, type[MapMethod]] = {
    "cam": Cam,
    "ddt_cam": DdtCam,
}


def register_map_method(name: str, method: type[MapMethod], *, replace: bool = False) -> None:
    """Register a :class:`MapMethod` subclass as ``name``."""
    if name in _MAP_METHODS and not replace:
        raise ValueError(f"map method {name!r} is already registered")
    _MAP_METHODS[name] = method


def map_methods() -> tuple[str, ...]:
    """Names of the registered map methods."""
    return tuple(_MAP_METHODS)


def map_method(name: str) -> type[MapMethod]:
    """The method registered as ``name``; ``ValueError`` naming the registered ones otherwise."""
    try:
        return _MAP_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown map method {name!r}; registered: {sorted(_MAP_METHODS)}") from None


def forward_with_cams(
    model: GapClassifier,
    x: Tensor,
    classes: Sequence[Sequence[int]] | None = None,
    *,
    top_k: int = 1,
    method: str = "cam",
    keep_features: bool = False,
    spec: ModelSpec | None = None,
) -> CamOutput:
    """One forward pass of ``model`` on ``x`` with the map method registered as ``method``
    (``spec``: for methods that read fitted statistics); see :meth:`MapMethod.__call__`."""
    return map_method(method)(model, spec)(x, classes, top_k=top_k, keep_features=keep_features)
