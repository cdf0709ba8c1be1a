"""CAM in the same forward pass as the logits: the exactness identity, pairs, autocast."""

from __future__ import annotations

import pytest
import torch

from camcore.cam import align_maps, class_activation_maps, select_pairs
from camcore.methods import DdtCam, MapMethod, forward_with_cams, map_methods, register_map_method
from camcore.models import ModelSpec, build_model
from camcore.objectness import descriptor_layer


@pytest.mark.parametrize("arch", ["tiny_cnn", "resnet18", "efficientnet_lite0"])
def test_spatial_mean_of_cam_plus_bias_equals_logit(arch: str, device: str) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(arch=arch, class_names=[f"c{i}" for i in range(5)], input_size=64)
    model = build_model(spec).to(device).eval()
    with torch.no_grad():
        model.classifier.bias.normal_()  # a non-zero bias, so the identity tests it too
    x = torch.randn(3, 3, 64, 64, device=device)
    tags = [[0, 4], [], [1, 2, 3]]  # a different number of classes per image
    out = forward_with_cams(model, x, tags)
    assert out.maps.shape[0] == 5 and out.image_index.tolist() == [0, 0, 2, 2, 2]
    assert out.class_index.tolist() == [0, 4, 1, 2, 3]
    assert out.maps.device.type == torch.device(device).type
    assert not out.maps.requires_grad  # no graph, no backward
    recon = out.maps.mean(dim=(1, 2)) + model.classifier.bias[out.class_index]
    target = out.logits[out.image_index, out.class_index]
    assert torch.allclose(recon, target, atol=1e-4, rtol=1e-4), (recon, target)
    with torch.no_grad():
        assert torch.allclose(out.logits, model(x), atol=1e-5)


def test_top_k_pairs_follow_the_logits() -> None:
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0], [5.0, 0.0, 1.0, 0.5]])
    img, cls = select_pairs(logits, None, top_k=2)
    assert img.tolist() == [0, 0, 1, 1] and cls.tolist() == [1, 3, 0, 2]
    img, cls = select_pairs(logits, None, top_k=10)
    assert len(cls) == 8
    with pytest.raises(ValueError, match="out of range"):
        select_pairs(logits, [[4], []])
    with pytest.raises(ValueError, match="entries for 2 images"):
        select_pairs(logits, [[1]])


def test_cam_is_the_weighted_sum_of_feature_maps() -> None:
    torch.manual_seed(1)
    feats = torch.randn(2, 6, 3, 4)
    weight = torch.randn(5, 6)
    maps = class_activation_maps(feats, weight, torch.tensor([1, 0]), torch.tensor([3, 2]))
    expected = torch.stack([(weight[3][:, None, None] * feats[1]).sum(0), (weight[2][:, None, None] * feats[0]).sum(0)])
    assert torch.allclose(maps, expected, atol=1e-5)
    assert class_activation_maps(feats, weight, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)).shape == (0, 3, 4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cams_under_cuda_autocast(dtype: torch.dtype, shared_dataset) -> None:  # type: ignore[no-untyped-def]
    """Maps of normal magnitude (ImageNet weights, real photos) stay float32-exact within tolerance."""
    from camcore.images import load_image
    from camcore.models import imagenet_classifier
    from camcore.transforms import Normalizer, preprocess

    model, spec = imagenet_classifier(input_size=224)
    model = model.cuda()
    photos = sorted((shared_dataset / "raccoon" / "images").glob("*.jpg"))[:2] + sorted((shared_dataset / "kangaroo" / "images").glob("*.jpg"))[:2]
    x = Normalizer(spec, "cuda")(preprocess([load_image(p, min_size=224) for p in photos], 224))
    exact = forward_with_cams(model, x, None, top_k=2)
    scale = float(exact.maps.abs().max())
    assert scale > 1.0  # real evidence, far from float16's underflow
    with torch.autocast("cuda", dtype=dtype):
        half = forward_with_cams(model, x, None, top_k=2)
    assert half.maps.dtype == torch.float32 and half.logits.dtype == torch.float32
    top = half.class_index[::2] == exact.class_index[::2]  # the same top class (a near tie may flip)
    assert int(top.sum()) >= 3
    recon = half.maps.mean(dim=(1, 2)) + model.classifier.bias[half.class_index]
    assert torch.allclose(recon, half.logits[half.image_index, half.class_index], atol=0.1, rtol=0.02)
    assert torch.allclose(half.maps[::2][top], exact.maps[::2][top], atol=0.05 * scale)


def test_align_maps_shifts_by_sub_cell_amounts() -> None:
    ramp = torch.arange(6.0).view(1, 1, 6).expand(1, 6, 6).clone()  # value = column index
    assert align_maps(ramp, 0.0) is ramp
    shifted = align_maps(ramp, 0.5)
    assert torch.allclose(shifted[0, 0, :5], torch.arange(5.0) + 0.5)
    assert float(shifted[0, 0, 5]) == 5.0  # clamped at the edge
    assert torch.allclose(align_maps(ramp, -0.25)[0, 3, 1:], torch.arange(1.0, 6.0) - 0.25)


def test_custom_map_methods_plug_in() -> None:
    class Ones(MapMethod):
        def maps(self, features: torch.Tensor, logits: torch.Tensor, image_index: torch.Tensor,
                 class_index: torch.Tensor) -> torch.Tensor:
            return features.new_ones((len(image_index), features.shape[2], features.shape[3]))

    register_map_method("test_ones", Ones, replace=True)
    assert "test_ones" in map_methods() and "cam" in map_methods()
    with pytest.raises(ValueError, match="already registered"):
        register_map_method("cam", Ones)
    spec = ModelSpec(arch="tiny_cnn", class_names=["a", "b"], input_size=32)
    model = build_model(spec).eval()
    out = forward_with_cams(model, torch.randn(2, 3, 32, 32), [[0], [1]], method="test_ones")
    assert torch.equal(out.maps, torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match="unknown map method"):
        forward_with_cams(model, torch.randn(1, 3, 32, 32), method="nope")


def test_a_map_method_hooks_the_model_only_while_it_runs() -> None:
    torch.manual_seed(0)
    spec = ModelSpec(arch="efficientnet_lite0", class_names=["a", "b"], input_size=64)
    model = build_model(spec).eval()
    layer = descriptor_layer(model)
    assert layer is not None
    method = DdtCam(model, spec)
    assert not layer._forward_pre_hooks
    out = method(torch.randn(2, 3, 64, 64), [[0], [1]])
    assert out.maps.shape[0] == 2 and float(out.maps.min()) >= 0.0 and float(out.maps.max()) <= 1.0
    assert not layer._forward_pre_hooks and not method.captured  # removed after the call
    with method:
        assert len(layer._forward_pre_hooks) == 1
        method(torch.randn(1, 3, 64, 64), [[0]])
        # a call inside the block keeps the block's hook and what it kept (320 descriptor channels)
        assert len(layer._forward_pre_hooks) == 1 and method.captured["descriptors"].shape[1] == 320
    assert not layer._forward_pre_hooks and not method.captured
