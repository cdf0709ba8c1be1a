"""Preparing a trained classifier for fast, exact inference.

:func:`prepare_for_inference` returns a *copy* of a model (the caller's model, its state dict and
its checkpoint layout are untouched) in which

- every ``BatchNorm2d`` that directly consumes a ``Conv2d``'s output is folded into that
  convolution's weight and bias (``torchvision``-style conv/BN fusion; BN in eval mode is an
  affine map per channel, so the result is the same function), and the BN is replaced by
  ``nn.Identity``;
- TensorFlow-style "same" convolutions (``efficientnet-lite-pytorch``'s
  ``Conv2dDynamicSamePadding``) pad inside the convolution instead of copying the input through
  ``F.pad`` first (exact: zero padding either way; models built by :mod:`camcore.models` have
  this already);
- activation modules run in place (``inplace=True``: no new tensor per activation);
- parameters use the requested memory format (channels-last by default: what oneDNN on CPUs and
  tensor cores on GPUs run fastest).

Which BN layers follow which convolution is found by running one example batch with forward
hooks (so any architecture works, with no per-model table), and the prepared copy is checked
against the original on that batch: if the logits differ by more than a float tolerance (a conv
output that something other than its BN also reads, or an activation whose input is read again),
the copy keeps only the exact padding rewrite. On EfficientNet-Lite0 this removes 49 BN passes,
17 pad copies and 33 activation allocations (17 modules) per forward (``bench/pipeline.py``
prints the speed of the prepared network next to the model as loaded).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

ModuleT = TypeVar("ModuleT", bound=nn.Module)

__all__ = [
    "InferenceReport",
    "SamePadConv2d",
    "fold_batchnorm",
    "example_batch",
    "prepare_for_inference",
    "use_in_place_activations",
    "use_symmetric_same_padding",
]


@dataclass(frozen=True)
class InferenceReport:
    """What :func:`prepare_for_inference` changed.

    Attributes:
        folded_batchnorms: BN layers folded into their convolution.
        same_pad_convs: "same"-padding convolutions that pad inside the convolution.
        in_place_activations: activation modules switched to ``inplace=True``.
        max_rel_diff: largest ``|logit(prepared) - logit(original)| / (1 + |logit(original)|)`` on the example batch.
    """

    folded_batchnorms: int
    same_pad_convs: int
    in_place_activations: int
    max_rel_diff: float


class SamePadConv2d(nn.Conv2d):
    """``Conv2d`` with TensorFlow "SAME" padding for any input size.

    Forward is the same function as ``efficientnet-lite-pytorch``'s ``Conv2dDynamicSamePadding``:
    output size ``ceil(input / stride)``, the extra pixel of an odd total padding on the
    right/bottom. The convolution pads by itself (no copy of the input through ``F.pad``): an odd
    total padding is done with a kernel one larger whose first row/column is zero (dilated
    kernels excepted).
    """

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        dh, dw = self.dilation
        pad_h = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        weight = self.weight
        if (pad_h % 2 or pad_w % 2) and (dh, dw) == (1, 1):
            # Odd total padding: TF puts the extra zero on the right/bottom. A kernel one larger
            # with a zero first row/column and symmetric padding of half the total + 1 computes
            # exactly that, without copying the (large) input through F.pad.
            weight = F.pad(weight, [pad_w % 2, 0, pad_h % 2, 0])
            pad_h, pad_w = pad_h + pad_h % 2, pad_w + pad_w % 2
        elif pad_h % 2 or pad_w % 2:  # dilated: pad the input
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
            pad_h = pad_w = 0
        return F.conv2d(x, weight, self.bias, self.stride, (pad_h // 2, pad_w // 2), self.dilation, self.groups)


def use_symmetric_same_padding(model: nn.Module) -> int:
    """Switch ``model``'s zero-``padding`` "same" convolutions (classes named
    ``Conv2dDynamicSamePadding``) to :class:`SamePadConv2d`, in place; returns how many.

    The swap changes only the forward method (same parameters, same state-dict keys)."""
    count = 0
    for module in model.modules():
        if type(module).__name__ == "Conv2dDynamicSamePadding" and isinstance(module, nn.Conv2d) and tuple(module.padding) == (0, 0):
            module.stride = tuple(module.stride) if len(module.stride) == 2 else (module.stride[0],) * 2
            module.__class__ = SamePadConv2d
            count += 1
    return count


_IN_PLACE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU)


def use_in_place_activations(model: nn.Module) -> int:
    """Set ``inplace=True`` on ``model``'s activation modules (ReLU, ReLU6, SiLU, ...), in place;
    returns how many were switched. Saves one allocation + write of every activation tensor; only
    valid where nothing else reads an activation's input (checked by :func:`prepare_for_inference`)."""
    count = 0
    for module in model.modules():
        if isinstance(module, _IN_PLACE_ACTIVATIONS) and not module.inplace:
            module.inplace = True
            count += 1
    return count


def example_batch(input_size: int) -> Tensor:
    """A fixed pseudo-random uint8 ``Tensor[1, 3, S, S]`` image batch (seed 0) to prepare a model with."""
    return torch.randint(0, 256, (1, 3, input_size, input_size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _parents(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    """``{id(child): (parent, attribute name)}`` for every submodule."""
    out: dict[int, tuple[nn.Module, str]] = {}
    for parent in model.modules():
        for name, child in parent.named_children():
            out[id(child)] = (parent, name)
    return out


def _conv_bn_pairs(model: nn.Module, example: Tensor) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, bn) pairs where the BN's input is exactly the conv's output tensor in a forward of ``example``."""
    calls: list[tuple[nn.Module, Tensor, Tensor]] = []

    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        calls.append((module, args[0], output))  # tensors kept alive, so ids stay unique

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    produced: dict[int, nn.Conv2d] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
    seen: set[int] = set()
    for module, inp, out in calls:
        if isinstance(module, nn.BatchNorm2d) and id(inp) in produced and id(module) not in seen:
            conv = produced.pop(id(inp))
            if module.track_running_stats and module.running_mean is not None:
                pairs.append((conv, module))
                seen.add(id(module))
        elif isinstance(module, nn.Conv2d):
            produced[id(out)] = module
    calls.clear()
    return pairs


def fold_batchnorm(model: nn.Module, example: Tensor) -> int:
    """Fold eval-mode ``BatchNorm2d`` layers into the convolution that feeds them, in place.

    Args:
        model: in eval mode (BN uses its running statistics).
        example: a ``Tensor[N, 3, H, W]`` batch the model accepts, on its device.

    Returns:
        The number of BN layers folded (each replaced by ``nn.Identity``).
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (BN must use running statistics)")
    pairs = _conv_bn_pairs(model, example)
    parents = _parents(model)
    for conv, bn in pairs:
        assert bn.running_mean is not None and bn.running_var is not None
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        conv.weight, conv.bias = weight, bias
        parent, name = parents[id(bn)]
        setattr(parent, name, nn.Identity())
    return len(pairs)


@torch.no_grad()
def prepare_for_inference(
    model: ModuleT,
    example: Tensor,
    *,
    memory_format: torch.memory_format = torch.channels_last,
    tolerance: float = 1e-3,
) -> tuple[ModuleT, InferenceReport]:
    """An eval-mode copy of ``model`` with BN folded, symmetric "same" padding done in the
    convolutions and ``memory_format`` weights; ``model`` itself is not modified.

    Args:
        model: a classifier (``Tensor[N, 3, H, W] -> Tensor[N, K]``) on its device.
        example: a normalised example batch ``Tensor[N, 3, H, W]`` on the model's device
            (one image is enough).
        memory_format: memory format of the copy's parameters.
        tolerance: largest accepted ``|logit difference|`` relative to ``1 + |logit|``; beyond it
            the BN folding is undone (the returned copy keeps only exact rewrites).

    Returns:
        ``(prepared copy, report)``.
    """
    reference = model.eval()(example).float()
    prepared = copy.deepcopy(model).eval()
    use_symmetric_same_padding(prepared)
    pads = sum(isinstance(m, SamePadConv2d) for m in prepared.modules())
    unfolded = copy.deepcopy(prepared)
    folded = fold_batchnorm(prepared, example)
    in_place = use_in_place_activations(prepared)
    prepared = prepared.to(memory_format=memory_format)
    diff = float((prepared(example.contiguous(memory_format=memory_format)).float() - reference).abs().div(1 + reference.abs()).max())
    if not math.isfinite(diff) or diff > tolerance:
        prepared, folded, in_place = unfolded.to(memory_format=memory_format), 0, 0
        diff = float((prepared(example).float() - reference).abs().div(1 + reference.abs()).max())
    return prepared, InferenceReport(folded_batchnorms=folded, same_pad_convs=pads, in_place_activations=in_place, max_rel_diff=diff)
