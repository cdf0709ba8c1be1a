"""``"cam"``: the class activation map of Zhou et al. (CVPR 2016), ``W[c] . f[:, x, y]``."""

from __future__ import annotations

from torch import Tensor

from camcore.cam import class_activation_maps
from camcore.methods.core import MapMethod

__all__ = ["Cam"]


class Cam(MapMethod):
    """The classifier's weights of each pair's class applied to the final features (no hooks)."""

    def maps(self, features: Tensor, logits: Tensor, image_index: Tensor, class_index: Tensor) -> Tensor:
        return class_activation_maps(features, self.model.classifier.weight, image_index, class_index)
