"""train_head: multi-label BCE, linear probe and fine-tune, seeded, per-class metrics."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
import torch

from camcore.models import ModelSpec
from camcore.separability import SPEC_KEY as SEPARABILITY_KEY
from camcore.training import average_precision, train_head
from tests.camcore.synth import SHAPES, make_dataset


def _tiny_spec() -> ModelSpec:
    return ModelSpec(arch="tiny_cnn", class_names=list(SHAPES), input_size=48)


@pytest.mark.slow  # trains two models
def test_linear_probe_is_deterministic_and_reports_progress(tmp_path: Path) -> None:
    images, tags, _ = make_dataset(30, seed=5, size=48, negatives=6)
    calls: list[tuple[int, int]] = []
    a = train_head(_tiny_spec(), images, tags, weights=None, seed=7, progress=lambda d, t: calls.append((d, t)))
    b = train_head(_tiny_spec(), images, tags, weights=None, seed=7)
    for pa, pb in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    c = train_head(_tiny_spec(), images, tags, weights=None, seed=8)
    assert not torch.equal(c.model.classifier.weight, a.model.classifier.weight)
    assert calls and calls[-1][0] == calls[-1][1] and all(x[0] <= y[0] for x, y in pairwise(calls))
    m = a.metrics
    assert m["mode"] == "linear" and m["n_train"] + m["n_val"] == 36 and m["n_val"] == 7
    assert set(m["train"]["per_class"]) == set(SHAPES)
    for entry in m["train"]["per_class"].values():
        assert {"ap", "accuracy", "positives", "n"} <= set(entry)
    assert m["val"] is not None and a.spec.extra["training"]["mode"] == "linear"
    # the held-out test of each class (camcore.separability), stored with the model
    told = a.spec.extra[SEPARABILITY_KEY]
    assert set(told["classes"]) == set(SHAPES) and all(e["n"] == 7 for e in told["classes"].values())
    # 7 held-out images: even a perfect ranking of 2 tagged ones is 1 placement in 21, so no class
    # can be shown told apart at 1 %, and nothing is decided from them
    assert not any(e["testable"] for e in told["classes"].values()) and told["told_apart"] is None
    assert not a.model.training


def test_multi_label_targets_and_bad_images_are_skipped(tmp_path: Path) -> None:
    images, tags, _ = make_dataset(12, seed=2, size=48)
    paths: list[Path] = []
    for i, img in enumerate(images):
        p = tmp_path / f"{i}.png"
        img.save(p)
        paths.append(p)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    multi = torch.zeros(13, 3)
    for i, t in enumerate(tags):
        multi[i, t] = 1
    multi[12, [0, 2]] = 1  # the broken file carries two tags
    result = train_head(_tiny_spec(), [*paths, broken], multi, weights=None, val_fraction=0.0)
    assert [s["index"] for s in result.metrics["skipped"]] == [12]
    assert "broken.jpg" in result.metrics["skipped"][0]["reason"]
    assert result.metrics["n_train"] == 12 and result.metrics["val"] is None
    assert SEPARABILITY_KEY not in result.spec.extra  # nothing held out: nothing known


def test_bad_arguments() -> None:
    images, tags, _ = make_dataset(3, seed=1, size=48)
    with pytest.raises(ValueError, match="mode"):
        train_head(_tiny_spec(), images, tags, mode="magic", weights=None)
    with pytest.raises(ValueError, match="out of range"):
        train_head(_tiny_spec(), images, [[0], [5], [1]], weights=None)
    with pytest.raises(ValueError, match="Tensor\\[3, 3\\]"):
        train_head(_tiny_spec(), images, torch.zeros(3, 2), weights=None)
    with pytest.raises(ValueError, match="no images"):
        train_head(_tiny_spec(), [], [], weights=None)


def test_average_precision() -> None:
    assert average_precision(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(torch.tensor([0.5]), torch.tensor([0])) is None


@pytest.mark.slow
def test_efficientnet_linear_probe_on_real_photos_uses_the_feature_cache(shared_dataset: Path, tmp_path: Path) -> None:
    raccoons = sorted((shared_dataset / "raccoon" / "images").glob("*.jpg"))[:12]
    kangaroos = sorted((shared_dataset / "kangaroo" / "images").glob("*.jpg"))[:12]
    files = raccoons + kangaroos
    tags = [[0]] * len(raccoons) + [[1]] * len(kangaroos)
    spec = ModelSpec(class_names=["raccoon", "kangaroo"], input_size=224)
    cache = tmp_path / "features"
    first = train_head(spec, files, tags, seed=0, cache_dir=cache)
    assert first.metrics["val"]["mean_ap"] >= 0.9, first.metrics["val"]
    assert len(list(cache.glob("*.pt"))) == len(files)
    second = train_head(spec, files, tags, seed=0, cache_dir=cache)  # features now come from the cache
    assert torch.equal(first.model.classifier.weight, second.model.classifier.weight)


@pytest.mark.parametrize("mode", ["linear", "finetune"])
def test_training_on_each_device(mode: str, device: str) -> None:
    images, tags, _ = make_dataset(24, seed=3, size=48)
    result = train_head(_tiny_spec(), images, tags, weights=None, mode=mode, device=device, epochs=2 if mode == "finetune" else 50)
    assert next(result.model.parameters()).device.type == torch.device(device).type
    assert result.metrics["train"]["mean_ap"] is not None


class _Stop(Exception):
    """What a caller raises from ``progress`` to stop training."""


def test_a_long_linear_fit_reports_progress_and_stops_when_progress_raises() -> None:
    images, tags, _ = make_dataset(8, seed=3, size=48)
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        if done > len(images) + 50:  # inside the Adam loop: past the features, 50 steps in
            raise _Stop()

    with pytest.raises(_Stop):
        train_head(_tiny_spec(), images, tags, weights=None, epochs=20_000, progress=progress)
    assert calls[-1][1] >= 20_000 and calls[-1][0] < len(images) + 70


@pytest.mark.parametrize(("mode", "epochs"), [("linear", 1_000_000_000), ("finetune", 501), ("linear", 0), ("linear", "many")])
def test_epochs_are_bounded_with_a_clear_error(mode: str, epochs: object) -> None:
    images, tags, _ = make_dataset(4, seed=3, size=48)
    with pytest.raises(ValueError, match="epochs must be"):
        train_head(_tiny_spec(), images, tags, weights=None, mode=mode, epochs=epochs)  # type: ignore[arg-type]
