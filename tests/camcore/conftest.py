"""camcore fixtures: devices, a tiny shape classifier trained once per session."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from PIL import Image

from tests.camcore.synth import SHAPES, make_dataset

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param


@dataclass
class TrainedShapes:
    model: torch.nn.Module
    spec: object
    metrics: dict
    test_images: list[Image.Image]
    test_tags: list[list[int]]
    test_boxes: list


@pytest.fixture(scope="session")
def trained_shapes() -> TrainedShapes:
    """tiny_cnn fine-tuned from scratch on 90 generated shape images (+30 negatives), 64x64."""
    from camcore.models import ModelSpec
    from camcore.training import train_head

    images, tags, _ = make_dataset(90, seed=0, size=64, negatives=30)
    spec = ModelSpec(arch="tiny_cnn", class_names=list(SHAPES), input_size=64)
    result = train_head(spec, images, tags, mode="finetune", weights=None, epochs=15, learning_rate=0.01,
                        weight_decay=0.1, batch_size=16, seed=0)
    test_images, test_tags, test_boxes = make_dataset(60, seed=1, size=64)
    return TrainedShapes(result.model, result.spec, result.metrics, test_images, test_tags, test_boxes)
