"""Loaded models are cached by their weights, not by the model version's row id."""

from __future__ import annotations

import io
from pathlib import Path

from camcore.models import ModelSpec, build_model, save_checkpoint
from worker.models_cache import load_model
from worker.store.blobs import LocalBlobStore
from worker.store.models import ModelVersion


def _version(blobs: LocalBlobStore, class_names: list[str]) -> ModelVersion:
    """Model version row 1 of its own database: a tiny model trained on ``class_names``."""
    spec = ModelSpec(arch="tiny_cnn", class_names=class_names, input_size=32)
    buffer = io.BytesIO()
    save_checkpoint(build_model(spec, weights=None), spec, buffer)
    key = blobs.put_bytes(buffer.getvalue(), kind="checkpoints", suffix=".pt")
    return ModelVersion(id=1, collection_id=1, name="m", arch="tiny_cnn", spec=spec.to_dict(), class_names=class_names,
                        checkpoint_key=key)


def test_the_same_version_id_in_two_databases_loads_each_ones_model(tmp_path: Path) -> None:
    """A process serving two databases (the embedded worker, the CLI, a test run) sees version 1
    name two different models; each gets its own."""
    first_blobs, second_blobs = LocalBlobStore(tmp_path / "a"), LocalBlobStore(tmp_path / "b")
    first, second = _version(first_blobs, ["raccoon", "kangaroo"]), _version(second_blobs, ["fish", "shark", "ray"])
    assert load_model(first, first_blobs, "cpu")[1].class_names == ["raccoon", "kangaroo"]
    assert load_model(second, second_blobs, "cpu")[1].class_names == ["fish", "shark", "ray"]
    model, spec = load_model(first, first_blobs, "cpu")  # still cached apart
    assert spec.class_names == ["raccoon", "kangaroo"] and model is load_model(first, first_blobs, "cpu")[0]
