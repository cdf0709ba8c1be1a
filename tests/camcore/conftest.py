"""camcore fixtures: devices, a tiny shape classifier trained once per test run."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from filelock import FileLock
from PIL import Image

from camcore.models import ModelSpec, load_checkpoint, save_checkpoint
from camcore.training import train_head
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
    spec: ModelSpec
    metrics: dict
    test_images: list[Image.Image]
    test_tags: list[list[int]]
    test_boxes: list


def _train_shapes() -> tuple[torch.nn.Module, ModelSpec, dict]:
    images, tags, _ = make_dataset(90, seed=0, size=64, negatives=30)
    spec = ModelSpec(arch="tiny_cnn", class_names=list(SHAPES), input_size=64)
    result = train_head(spec, images, tags, mode="finetune", weights=None, epochs=15, learning_rate=0.01,
                        weight_decay=0.1, batch_size=16, seed=0)
    return result.model, result.spec, result.metrics


@pytest.fixture(scope="session")
def trained_shapes(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> TrainedShapes:
    """tiny_cnn fine-tuned from scratch on 90 generated shape images (+30 negatives), 64x64.

    Trained once per run: under pytest-xdist the first worker that needs it trains it and the
    others load its checkpoint from the run's shared temporary folder (behind a file lock)."""
    if worker_id == "master":  # one process: nothing to share
        model, spec, metrics = _train_shapes()
    else:
        shared = tmp_path_factory.getbasetemp().parent  # this run's folder, common to its workers
        checkpoint, metrics_file = shared / "trained_shapes.pt", shared / "trained_shapes.json"
        with FileLock(str(checkpoint) + ".lock"):
            if checkpoint.is_file():
                model, spec = load_checkpoint(checkpoint)
                metrics = json.loads(metrics_file.read_text())
            else:
                model, spec, metrics = _train_shapes()
                save_checkpoint(model, spec, checkpoint)
                metrics_file.write_text(json.dumps(metrics))
    test_images, test_tags, test_boxes = make_dataset(60, seed=1, size=64)
    return TrainedShapes(model.eval(), spec, metrics, test_images, test_tags, test_boxes)
