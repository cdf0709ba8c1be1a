"""Models: specs, builders, pretrained weights offline, checkpoints."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from camcore.images import load_image
from camcore.models import (
    ModelSpec,
    WeightsUnavailableError,
    build_model,
    imagenet_class_names,
    imagenet_classifier,
    load_checkpoint,
    save_checkpoint,
)
from camcore.transforms import preprocess


def test_spec_round_trip_and_validation() -> None:
    spec = ModelSpec(arch="resnet18", class_names=["a", "b"], input_size=224, extra={"note": 1})
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert spec.num_classes == 2 and spec.feature_channels == 512 and spec.feature_stride == 32
    with pytest.raises(ValueError, match="unknown arch"):
        ModelSpec(arch="alexnet")
    with pytest.raises(ValueError, match="unknown ModelSpec fields"):
        ModelSpec.from_dict({"arch": "tiny_cnn", "colour": 1})


@pytest.mark.parametrize(
    ("arch", "channels", "cells"),
    [("tiny_cnn", 64, 16), ("resnet18", 512, 2), ("efficientnet_lite0", 1280, 2), ("vgg16_gap", 1024, 4)],
)
def test_feature_maps_have_the_documented_shape(arch: str, channels: int, cells: int) -> None:
    spec = ModelSpec(arch=arch, class_names=["a", "b", "c"], input_size=64)
    model = build_model(spec).eval()
    with torch.no_grad():
        feats = model.features(torch.randn(2, 3, 64, 64))
        assert feats.shape == (2, channels, cells, cells)
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    assert model.classifier.in_features == channels == spec.feature_channels
    assert 64 // spec.feature_stride == cells


def test_vgg16_gap_is_the_papers_variant() -> None:
    model = build_model(ModelSpec(arch="vgg16_gap", class_names=["a"]))
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 14  # conv1_1 .. conv5_3, then the added 3x3 conv
    assert convs[-1].out_channels == 1024 and convs[-1].kernel_size == (3, 3)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in list(model.backbone.features)[-3:])  # pool5 removed


@pytest.fixture
def no_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("CAMLABEL_ALLOW_DOWNLOAD", raising=False)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "vgg16_gap"])
def test_torchvision_weights_missing_offline_name_both_options(arch: str, no_hub_cache: Path) -> None:
    spec = ModelSpec(arch=arch, class_names=["a"])
    with pytest.raises(WeightsUnavailableError) as info:
        build_model(spec, weights="imagenet")
    message = str(info.value)
    assert str(no_hub_cache) in message  # option 1: the hub cache file
    assert "weights=<path" in message  # option 2: a local file
    assert "CAMLABEL_ALLOW_DOWNLOAD" in message


def test_vgg16_gap_takes_torchvisions_vgg16_convolutions(tmp_path: Path) -> None:
    from torchvision.models import vgg16

    torch.manual_seed(4)
    upstream = vgg16(weights=None).eval()
    path = tmp_path / "vgg16.pth"
    torch.save({k: v for k, v in upstream.state_dict().items() if k.startswith("features.")}, path)
    model = build_model(ModelSpec(arch="vgg16_gap", class_names=["a"], input_size=64), weights=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # conv1_1 .. conv5_3 + ReLU are torchvision's, pool5 left out
        assert torch.allclose(model.backbone.features(x), upstream.features[:30](x), atol=1e-5)


def test_resnet_weights_from_a_local_file_and_from_the_hub_cache(tmp_path: Path, no_hub_cache: Path) -> None:
    from torchvision.models import ResNet18_Weights, resnet18

    torch.manual_seed(3)
    upstream = resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(upstream.state_dict(), path)
    spec = ModelSpec(arch="resnet18", class_names=[str(i) for i in range(1000)], input_size=64)
    model = build_model(spec, weights=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), upstream.eval()(x), atol=1e-5)  # fc kept: 1000 classes
    # the same file placed where torchvision's weight enum would cache it
    no_hub_cache.mkdir(parents=True)
    (no_hub_cache / Path(ResNet18_Weights.IMAGENET1K_V1.url).name).write_bytes(path.read_bytes())
    cached = build_model(ModelSpec(arch="resnet18", class_names=["a", "b"]), weights="imagenet")
    assert torch.equal(cached.backbone.net.conv1.weight, upstream.conv1.weight)
    with pytest.raises(ValueError, match="do not fit"):
        build_model(ModelSpec(arch="resnet50", class_names=["a"]), weights=path)
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_model(spec, weights=tmp_path / "missing.pth")
    with pytest.raises(WeightsUnavailableError, match="no pretrained weights"):
        build_model(ModelSpec(arch="tiny_cnn", class_names=["a"]), weights="imagenet")


def test_efficientnet_lite0_imagenet_weights_load_offline_and_recognise_kangaroos(shared_dataset: Path) -> None:
    model, spec = imagenet_classifier(input_size=224)
    assert spec.num_classes == 1000 and spec.class_names == imagenet_class_names()
    random_init = build_model(ModelSpec(arch="efficientnet_lite0", class_names=["a"]))
    assert not torch.equal(model.backbone.net._conv_stem.weight, random_init.backbone.net._conv_stem.weight)
    files = sorted((shared_dataset / "kangaroo" / "images").glob("*.jpg"))[:4]
    batch = preprocess([load_image(f) for f in files], spec.input_size).float()
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(spec.std).view(1, 3, 1, 1) * 255
    with torch.no_grad():
        logits = model((batch - mean) / std)
    assert torch.isfinite(logits).all()
    top5 = [[spec.class_names[i] for i in row] for row in logits.topk(5, dim=1).indices.tolist()]
    with_wallaby = sum("wallaby" in names for names in top5)
    assert with_wallaby >= 3, top5  # ImageNet's kangaroo class is "wallaby"


@pytest.mark.parametrize("arch", ["tiny_cnn", "efficientnet_lite0"])
def test_checkpoint_round_trip(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(arch=arch, class_names=["cat", "dog"], input_size=64, extra={"trained": "yes"})
    model = build_model(spec).eval()
    with torch.no_grad():
        model.classifier.bias.fill_(0.25)
    path = tmp_path / "model.ckpt"
    save_checkpoint(model, spec, path)
    raw = torch.load(path, weights_only=True)  # plain content: loadable with weights_only
    assert raw["spec"]["class_names"] == ["cat", "dog"]
    loaded, loaded_spec = load_checkpoint(path, map_location="cpu")
    assert loaded_spec == spec and not loaded.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    buf = io.BytesIO()
    save_checkpoint(model, spec, buf)
    buf.seek(0)
    assert load_checkpoint(buf)[1] == spec


def test_bad_checkpoints_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a loadable camlabel checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match="not a camlabel checkpoint"):
        load_checkpoint(other)
    spec = ModelSpec(arch="tiny_cnn", class_names=["a"])
    mismatched = tmp_path / "mismatch.ckpt"
    torch.save({"format": "camlabel-checkpoint/1", "spec": spec.to_dict(), "state_dict": {"x": torch.zeros(1)}}, mismatched)
    with pytest.raises(ValueError, match="do not fit its spec"):
        load_checkpoint(mismatched)


def test_imagenet_classifier_refuses_archs_without_one() -> None:
    with pytest.raises(ValueError, match="no pretrained ImageNet classifier"):
        imagenet_classifier(arch="vgg16_gap")
    assert len(np.unique(imagenet_class_names())) >= 999
