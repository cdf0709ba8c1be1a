"""Inference preparation: BN folding and in-conv "same" padding give the same function, faster."""

from __future__ import annotations

import pytest
import torch
from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding
from torch import nn

from camcore.boxes import BoxParams
from camcore.localizer import Localizer
from camcore.models import ModelSpec, build_model
from camcore.prepare import SamePadConv2d, fold_batchnorm, prepare_for_inference, use_symmetric_same_padding


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine terms (fresh BN layers are the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize(("size", "stride", "kernel"), [(33, 1, 3), (32, 2, 3), (33, 2, 3), (31, 2, 5), (20, 1, 5), (17, 2, 1)])
def test_same_pad_conv_is_the_upstream_function(size: int, stride: int, kernel: int) -> None:
    torch.manual_seed(0)
    upstream = Conv2dDynamicSamePadding(4, 6, kernel, stride=stride, bias=True)
    ours = Conv2dDynamicSamePadding(4, 6, kernel, stride=stride, bias=True)
    ours.load_state_dict(upstream.state_dict())
    assert use_symmetric_same_padding(ours) == 1 and isinstance(ours, SamePadConv2d)
    x = torch.randn(2, 4, size, size + 3)
    a, b = upstream(x), ours(x)
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=1e-6)
    assert set(ours.state_dict()) == set(upstream.state_dict())


@pytest.mark.parametrize("architecture", ["efficientnet_lite0", "resnet18", "tiny_cnn"])
def test_prepared_copy_computes_the_same_logits(architecture: str) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(arch=architecture, class_names=["a", "b", "c"], input_size=96)
    model = build_model(spec, weights=None).eval()
    _randomise_batchnorm(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 3, 96, 96)
    prepared, report = prepare_for_inference(model, x[:1])
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert report.folded_batchnorms == n_bn > 0  # every BN of these nets follows a conv
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    assert report.max_rel_diff < 1e-4
    with torch.no_grad():
        assert torch.allclose(prepared(x), model(x), atol=1e-4, rtol=1e-4)  # other images than the example
    after = model.state_dict()  # the caller's model is untouched
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


class _SharedConvOutput(nn.Module):
    """A conv whose output feeds its BN *and* a skip: folding the BN would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.head((self.bn(y) + y).mean(dim=(2, 3)))


def test_folding_that_changes_the_function_is_undone() -> None:
    torch.manual_seed(0)
    model = _SharedConvOutput().eval()
    _randomise_batchnorm(model)
    x = torch.randn(2, 3, 16, 16)
    prepared, report = prepare_for_inference(model, x)
    assert report.folded_batchnorms == 0
    assert isinstance(prepared.bn, nn.BatchNorm2d)
    with torch.no_grad():
        assert torch.allclose(prepared(x), model(x), atol=1e-6)


def test_fold_batchnorm_refuses_training_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(_SharedConvOutput().train(), torch.randn(1, 3, 8, 8))


def test_localizer_prepared_and_unprepared_agree(trained_shapes) -> None:  # type: ignore[no-untyped-def]
    ts = trained_shapes
    # the fixture's tiny_cnn was trained: its BN layers carry real running statistics
    params = BoxParams(method="cam", mode="largest", threshold=0.2, normalize="max")
    fast = Localizer(ts.model, ts.spec, params=params)
    plain = Localizer(ts.model, ts.spec, params=params, prepare=False)
    assert fast.inference_report is not None and fast.inference_report.folded_batchnorms > 0
    assert plain.inference_report is None
    for a, b in zip(fast.localize(ts.test_images[:8], ts.test_tags[:8]), plain.localize(ts.test_images[:8], ts.test_tags[:8]), strict=True):
        assert torch.allclose(a.class_scores, b.class_scores, atol=1e-4)
        for c in a.maps:
            assert torch.allclose(a.maps[c], b.maps[c], atol=1e-3, rtol=1e-3)
        assert torch.allclose(a.boxes, b.boxes, atol=1.0)


@pytest.mark.parametrize("dilation", [1, 2])
def test_same_pad_conv_dilated_and_gradients(dilation: int) -> None:
    torch.manual_seed(1)
    upstream = Conv2dDynamicSamePadding(3, 5, 3, stride=2, dilation=dilation, bias=False)
    ours = Conv2dDynamicSamePadding(3, 5, 3, stride=2, dilation=dilation, bias=False)
    ours.load_state_dict(upstream.state_dict())
    use_symmetric_same_padding(ours)
    x = torch.randn(2, 3, 24, 25)
    a, b = upstream(x), ours(x)
    assert torch.allclose(a, b, atol=1e-6)
    a.sum().backward()
    b.sum().backward()  # training through the swapped conv gives the same weight gradient
    assert upstream.weight.grad is not None and ours.weight.grad is not None
    assert torch.allclose(upstream.weight.grad, ours.weight.grad, atol=1e-5)


class _ReusedActivationInput(nn.Module):
    """An activation whose input is read again afterwards: running it in place would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU6()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return self.head((self.act(y) + y).mean(dim=(2, 3)))


def test_in_place_activation_that_changes_the_function_is_undone() -> None:
    torch.manual_seed(0)
    model = _ReusedActivationInput().eval()
    _randomise_batchnorm(model)
    x = torch.randn(2, 3, 16, 16) * 4
    prepared, report = prepare_for_inference(model, x)
    assert (report.folded_batchnorms, report.in_place_activations) == (0, 0)
    assert not prepared.act.inplace
    with torch.no_grad():
        assert torch.allclose(prepared(x), model(x), atol=1e-6)
