"""The fastest forward pass of a classifier on a device, picked by a short measured probe.

Variants (:class:`ForwardVariant`): the network as loaded or its inference copy
(:func:`camcore.prepare.prepare_for_inference`: BatchNorm folded, "same" padding inside the
convolutions), NCHW or channels-last, float32 or ``torch.autocast`` in bfloat16 / float16, and the
batch size. Which is fastest depends on the device: on CPUs (oneDNN) the prepared channels-last
network in float32 wins clearly (``bench/pipeline.py`` prints ``prepared_vs_loaded_forward``), so
a CPU keeps that choice with no probe; on a GPU the cuDNN kernels decide, so
:func:`choose_forward` times each variant on a few synthetic batches and keeps the fastest whose
logits agree with float32 (a variant that overflows in float16 is never chosen). The choice is
cached per process (one probe per worker and model shape).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ForwardVariant", "ProbeTiming", "choose_forward", "default_variant", "forward_candidates", "probe_forward"]

#: Largest accepted ``|logit - float32 logit| / (1 + |float32 logit|)`` of a variant.
LOGIT_TOLERANCE = 0.05

_CHOICES: dict[tuple[Any, ...], ForwardVariant] = {}


@dataclass(frozen=True)
class ForwardVariant:
    """One way to run the forward pass.

    Attributes:
        prepared: run the inference copy (BN folded) instead of the network as loaded.
        channels_last: channels-last memory format for input and weights.
        autocast_dtype: ``torch.bfloat16`` / ``torch.float16`` under ``torch.autocast``, or ``None``
            (float32).
        batch_size: images per forward pass.
    """

    prepared: bool = True
    channels_last: bool = True
    autocast_dtype: torch.dtype | None = None
    batch_size: int = 16

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        dtype = "fp32" if self.autocast_dtype is None else str(self.autocast_dtype).replace("torch.", "")
        return (f"{'prepared' if self.prepared else 'loaded'}/{'channels_last' if self.channels_last else 'nchw'}/"
                f"{dtype}/batch{self.batch_size}")


@dataclass(frozen=True)
class ProbeTiming:
    """``images_per_s`` of ``variant`` in the probe, and its logits' ``max_rel_diff`` to float32."""

    variant: ForwardVariant
    images_per_s: float
    max_rel_diff: float


def default_variant(batch_size: int, autocast_dtype: torch.dtype | None = None, *, channels_last: bool = True,
                    prepared: bool = True) -> ForwardVariant:
    """The variant used without a probe (the CPU's measured best: prepared, channels-last)."""
    return ForwardVariant(prepared=prepared, channels_last=channels_last, autocast_dtype=autocast_dtype, batch_size=batch_size)


def forward_candidates(device: torch.device, batch_size: int, autocast_dtype: torch.dtype | None) -> list[ForwardVariant]:
    """Variants worth timing on ``device`` at ``batch_size`` (batch sizes are probed afterwards).

    On CUDA: prepared or loaded, NCHW or channels-last, in ``autocast_dtype`` if given, else in
    bfloat16 and float16 (tensor cores; the maps stay float32, see :mod:`camcore.cam`)."""
    on_cuda_unset = device.type == "cuda" and autocast_dtype is None
    dtypes: Sequence[torch.dtype | None] = [torch.bfloat16, torch.float16] if on_cuda_unset else [autocast_dtype]
    return [ForwardVariant(prepared=p, channels_last=cl, autocast_dtype=d, batch_size=batch_size)
            for d in dtypes for p in (True, False) for cl in (True, False)]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def probe_forward(
    networks: Callable[[ForwardVariant], nn.Module],
    input_size: int,
    device: torch.device,
    candidates: Sequence[ForwardVariant],
    *,
    rounds: int = 3,
    warmup: int = 2,
) -> list[ProbeTiming]:
    """Time each candidate's forward pass on synthetic normalised batches.

    Args:
        networks: the network a variant runs (its ``prepared`` flag and memory format applied).
        input_size: side ``S`` of the ``Tensor[B, 3, S, S]`` batches.
        candidates: variants to time.
        rounds: timed forward passes per variant (after ``warmup`` untimed ones).

    Returns:
        One :class:`ProbeTiming` per candidate, in order.
    """
    out: list[ProbeTiming] = []
    reference: dict[int, Tensor] = {}
    for variant in candidates:
        gen = torch.Generator().manual_seed(variant.batch_size)  # the same batch for every variant of a size
        x_cpu = torch.randn((variant.batch_size, 3, input_size, input_size), generator=gen).clamp_(-2.5, 2.5)
        x = x_cpu.to(device).contiguous(memory_format=variant.memory_format)
        net = networks(variant)
        try:
            if variant.batch_size not in reference:
                reference[variant.batch_size] = net(x).float()  # float32 logits: the yardstick
            with _autocast(device, variant.autocast_dtype):
                for _ in range(warmup):
                    logits = net(x)
                _sync(device)
                start = time.perf_counter()
                for _ in range(rounds):
                    logits = net(x)
                _sync(device)
                seconds = time.perf_counter() - start
        except torch.OutOfMemoryError:  # a batch this device cannot hold: never chosen
            del x
            if device.type == "cuda":
                torch.cuda.empty_cache()
            out.append(ProbeTiming(variant, 0.0, float("inf")))
            continue
        ref = reference[variant.batch_size]
        diff = float((logits.float() - ref).abs().div(1 + ref.abs()).max())
        out.append(ProbeTiming(variant, variant.batch_size * rounds / max(seconds, 1e-9), diff if diff == diff else float("inf")))
    return out


def choose_forward(
    networks: Callable[[ForwardVariant], nn.Module],
    input_size: int,
    device: str | torch.device,
    *,
    batch_size: int,
    autocast_dtype: torch.dtype | None = None,
    batch_sizes: Sequence[int] = (64, 128, 256),
    cache_key: tuple[Any, ...] = (),
    probe: bool | None = None,
) -> ForwardVariant:
    """The fastest accurate variant for ``device``, probed once per process and ``cache_key``.

    Args:
        networks: builds (or returns) the network of a variant.
        batch_size: the caller's batch size (always a candidate).
        autocast_dtype: restricts the probe to this precision (``None``: bf16 and fp16 on CUDA).
        batch_sizes: further batch sizes tried with the fastest layout and precision.
        cache_key: what identifies the model (architecture, input size, classes).
        probe: ``None`` probes on CUDA only (a CPU keeps :func:`default_variant`); ``True``
            probes on any device; ``False`` never.
    """
    dev = torch.device(device)
    if probe is None:
        probe = dev.type == "cuda"
    if not probe:
        return default_variant(batch_size, autocast_dtype)
    key = (str(dev), torch.cuda.get_device_name(dev) if dev.type == "cuda" else "", batch_size, autocast_dtype,
           tuple(batch_sizes), *cache_key)
    if key in _CHOICES:
        return _CHOICES[key]
    timings = [t for t in probe_forward(networks, input_size, dev, forward_candidates(dev, batch_size, autocast_dtype))
               if t.max_rel_diff <= LOGIT_TOLERANCE]
    if not timings:
        choice = default_variant(batch_size, None)
    else:
        best = max(timings, key=lambda t: t.images_per_s).variant
        sizes = [b for b in dict.fromkeys([batch_size, *batch_sizes]) if b != batch_size]
        if sizes:  # larger batches of the winning layout and precision
            per_size = [t for t in probe_forward(networks, input_size, dev,
                                                 [ForwardVariant(best.prepared, best.channels_last, best.autocast_dtype, b) for b in sizes])
                        if t.max_rel_diff <= LOGIT_TOLERANCE]
            first = next(t for t in timings if t.variant == best)
            fastest = max([first, *per_size], key=lambda t: t.images_per_s)
            # a larger batch only if it is clearly faster (memory and latency cost)
            choice = fastest.variant if fastest.images_per_s > 1.05 * first.images_per_s else best
        else:
            choice = best
    _CHOICES[key] = choice
    return choice
