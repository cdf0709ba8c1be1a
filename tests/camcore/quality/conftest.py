"""Quality fixtures: a tiny CNN trained once on images with a planted common object."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch


@dataclass
class Planted:
    model: torch.nn.Module
    spec: object
    train_images: list
    train_tags: list[list[int]]
    train_boxes: list


@pytest.fixture(scope="module")
def planted() -> Planted:
    """``tiny_cnn`` (stride 4) fine-tuned on 60 images holding 1-3 planted objects + 30 negatives."""
    from camcore.models import ModelSpec
    from camcore.training import train_head
    from tests.camcore.quality.synth import planted_images

    torch.manual_seed(0)
    images, tags, boxes = planted_images(60, seed=0, objects=(1, 3), negatives=30)
    spec = ModelSpec(arch="tiny_cnn", class_names=["thing"], input_size=96)
    result = train_head(spec, images, tags, mode="finetune", weights=None, epochs=12, learning_rate=0.01,
                        weight_decay=0.1, batch_size=16, seed=0)
    return Planted(result.model.eval(), result.spec, images[:60], tags[:60], boxes[:60])
