"""``"ddt_cam"``: the class CAM fused with a DDT objectness map of the same class (camlabel's default).

The descriptors are the input of the descriptor layer (:func:`camcore.objectness.descriptor_layer`,
kept by a forward hook; the final features for architectures without one). With the model's
fitted statistics (``spec.extra["objectness"]``, :func:`camcore.objectness.fit_objectness`) each
class projects onto its own principal direction; without them (or with statistics of another
width) each pair uses its own image's descriptors (batch-independent). See
:mod:`camcore.objectness`.
"""

from __future__ import annotations

from torch import Tensor, nn

from camcore.cam import class_activation_maps
from camcore.methods.core import MapMethod
from camcore.models import GapClassifier, ModelSpec
from camcore.objectness import (
    SPEC_KEY,
    ObjectnessStats,
    descriptor_layer,
    fuse_maps,
    objectness_maps,
    per_image_objectness,
)

__all__ = ["DdtCam"]


class DdtCam(MapMethod):
    """``(minmax(cam) + minmax(ddt)) / 2`` per pair; ``ddt`` alone for a class whose CAM disagrees
    with its objectness (``ObjectnessStats.uses_cam``).

    Attributes:
        stats: the fitted :class:`~camcore.objectness.ObjectnessStats` of ``spec``, or ``None``.
    """

    def __init__(self, model: GapClassifier, spec: ModelSpec | None = None) -> None:
        super().__init__(model, spec)
        raw = (spec.extra or {}).get(SPEC_KEY) if spec is not None else None
        self.stats = ObjectnessStats.from_dict(raw) if raw else None

    def hooked_inputs(self) -> dict[str, nn.Module]:
        layer = descriptor_layer(self.model)
        return {} if layer is None else {"descriptors": layer}

    def codes(self, features: Tensor) -> Tensor | None:
        """The descriptors on the training images' basis (``None`` for a model without one)."""
        basis = None if self.stats is None else self.stats.basis
        descriptors = self.captured.get("descriptors", features)
        if basis is None or basis.channels != descriptors.shape[1]:
            return None
        return basis.project(descriptors)

    def maps(self, features: Tensor, logits: Tensor, image_index: Tensor, class_index: Tensor) -> Tensor:
        cams = class_activation_maps(features, self.model.classifier.weight, image_index, class_index).float()
        descriptors = self.captured.get("descriptors", features)
        if self.stats is not None and self.stats.channels == descriptors.shape[1]:
            objectness = objectness_maps(descriptors, self.stats, image_index, class_index)
            return fuse_maps(cams, objectness.float(), self.stats.cam_weights(class_index))
        return fuse_maps(cams, per_image_objectness(descriptors, cams, image_index).float())
