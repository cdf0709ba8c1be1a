"""Class-specific objectness maps by Deep Descriptor Transforming (DDT, Wei et al. 2017).

The pixels of the images tagged with class ``c`` share one common object. The first principal
component of their backbone descriptors separates that object from the background: projecting a
pixel's descriptor ``f[x, y]`` onto it gives an objectness value (positive: object). Combined with
the class activation map (which finds the *discriminative part* of the class and tells which side
of the component is the object), it yields a map that covers the *whole* object:

    fused = (minmax(cam) + minmax(ddt_c)) / 2                     values in [0, 1]

Descriptors: for EfficientNet-Lite the output of the last MBConv block (320 channels, the input
of the 1x1 head convolution) -- measured better than the 1280-channel head output for PCA; for
other architectures the final feature map.

Which side of the component is the object is read from the network's activations, not from the
class map: the channel sum of the final features is high on objects (Wei et al., SCDA 2017), and
the side that correlates with it is positive. The class map is then checked against that
objectness. Where a class's CAM correlates *negatively* with it over the class's images (the
classifier cannot tell the tags apart, so its head scores the common object *against* each
rare tag: random or fine-grained tags the features do not separate), the class map carries no
location signal: that class's maps are the objectness alone (``uses_cam`` False), with
statistics pooled over all such classes (to the features they are one class). Measured on the
364 raccoon/kangaroo photos with 26 random tags: every class's CAM correlates at -0.57 to -0.85
with the objectness; CorLoc@0.5 0.335 fused (the best centred box: 0.516) -> 0.742. On the
dev collections with their real tags every class agrees (0.23 to 0.80) except one of
aquarium's seven (puffin, -0.43), and CorLoc is unchanged.

A class map can also agree with the objectness and still carry no location: with 2 random tags
over the same photos each tag has ~180 photos, the head memorises them, and both maps agree
(0.00 and 0.33) while pointing anywhere (CorLoc@0.5 0.448, the best centred box 0.516). The
train job's held-out test (:mod:`camcore.separability`) sees that the classifier does not tell
the tags apart; then every class is set apart here as well (0.742).

Statistics are streamed: :class:`DdtAccumulator` keeps per class the descriptor sum, the sum of
outer products (``C x C``) and the covariances with the CAM and the activations, so fitting needs one pass and
``K * C * C`` float64 values (320 channels: 0.8 MB per class). It keeps the same moments once over
all images, class-agnostically: the collection's descriptor basis
(:mod:`camcore.descriptor_basis`), stored with the statistics, codes each image's descriptors
compactly at inference. :class:`ObjectnessStats` is JSON-safe
(``to_dict``) and lives in ``ModelSpec.extra["objectness"]`` of a trained model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from camcore.cam import class_activation_maps
from camcore.descriptor_basis import DescriptorBasis, basis_from_moments
from camcore.models import GapClassifier, ModelSpec
from camcore.prepare import example_batch, prepare_for_inference
from camcore.separability import stored_verdict
from camcore.streaming import loader_kind, stream_batches
from camcore.transforms import Normalizer

__all__ = [
    "DdtAccumulator",
    "ObjectnessStats",
    "SPEC_KEY",
    "capture_descriptors",
    "descriptor_layer",
    "fit_objectness",
    "fuse_maps",
    "minmax",
    "objectness_maps",
    "per_image_objectness",
]

SPEC_KEY = "objectness"


def minmax(maps: Tensor) -> Tensor:
    """Per-map min-max scaling of ``Tensor[P, h, w]`` to [0, 1] (a constant map becomes zeros)."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be Tensor[P, h, w], got shape {tuple(maps.shape)}")
    m = maps.float()
    lo = m.amin(dim=(1, 2), keepdim=True)
    span = m.amax(dim=(1, 2), keepdim=True) - lo
    return torch.where(span > 1e-12, (m - lo) / span.clamp(min=1e-12), torch.zeros_like(m))


def fuse_maps(cams: Tensor, objectness: Tensor, cam_weight: Tensor | None = None) -> Tensor:
    """``w minmax(cams) + (1 - w) minmax(objectness)`` for ``Tensor[P, h, w]`` pairs of equal shape.

    ``cam_weight``: ``Tensor[P]`` per pair ``w`` (default 0.5 for every pair)."""
    if cams.shape != objectness.shape:
        raise ValueError(f"cam maps {tuple(cams.shape)} and objectness maps {tuple(objectness.shape)} differ")
    if cam_weight is None:
        return 0.5 * (minmax(cams) + minmax(objectness))
    w = cam_weight.to(cams.device, torch.float32).view(-1, 1, 1)
    return w * minmax(cams) + (1 - w) * minmax(objectness)


def descriptor_layer(model: nn.Module) -> nn.Module | None:
    """Module whose *input* is the descriptor map (EfficientNet-Lite's head conv), or ``None``."""
    net = getattr(getattr(model, "backbone", None), "net", None)
    head = getattr(net, "_conv_head", None)
    return head if isinstance(head, nn.Module) else None


@contextlib.contextmanager
def capture_descriptors(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Capture the descriptor map during forward passes of ``model``.

    Yields a dict whose ``"features"`` entry is set to ``Tensor[N, C', h, w]`` after each forward
    (absent for architectures without a known descriptor layer: use the final features then).
    The hook is always removed on exit.
    """
    store: dict[str, Tensor] = {}
    layer = descriptor_layer(model)
    if layer is None:
        yield store
        return

    def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
        store["features"] = args[0]

    handle = layer.register_forward_pre_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


@dataclass
class ObjectnessStats:
    """Per-class DDT projection: ``ddt_c(x, y) = (f[:, x, y] - mean[c]) . direction[c]``.

    Attributes:
        mean: ``Tensor[K, C]`` mean descriptor of the pixels of images tagged with each class.
        direction: ``Tensor[K, C]`` unit first principal component, signed so that it correlates
            positively with the network's activations (object side positive; with the class CAM
            for statistics fitted without activations).
        valid: ``Tensor[K]`` bool, False for classes without images (their maps fall back to CAM).
        uses_cam: ``Tensor[K]`` bool, False for classes whose CAM disagrees with the objectness
            (their maps are the objectness alone); all True when not given (statistics stored
            before this was measured).
        cam_agreement: ``Tensor[K]`` float, correlation of each class's CAM with its objectness
            over its images (zeros when not given).
        basis: the training images' descriptor basis, which codes each image for learning from
            review (:mod:`camcore.descriptor_basis`); ``None`` for statistics stored before it.
    """

    mean: Tensor
    direction: Tensor
    valid: Tensor
    uses_cam: Tensor | None = None
    cam_agreement: Tensor | None = None
    basis: DescriptorBasis | None = None

    def __post_init__(self) -> None:
        if self.mean.dim() != 2 or self.mean.shape != self.direction.shape:
            raise ValueError(f"mean {tuple(self.mean.shape)} and direction {tuple(self.direction.shape)} must be [K, C]")
        k = self.mean.shape[0]
        if self.valid.shape != (k,):
            raise ValueError(f"valid must be [K]={k}, got {tuple(self.valid.shape)}")
        if self.uses_cam is None:
            self.uses_cam = torch.ones(k, dtype=torch.bool)
        if self.cam_agreement is None:
            self.cam_agreement = torch.zeros(k)
        if self.uses_cam.shape != (k,) or self.cam_agreement.shape != (k,):
            raise ValueError(f"uses_cam and cam_agreement must be [K]={k}, got {tuple(self.uses_cam.shape)} "
                             f"and {tuple(self.cam_agreement.shape)}")

    def cam_weights(self, class_index: Tensor) -> Tensor:
        """``Tensor[P]`` weight of the CAM in the fused map of each pair's class: 0.5, or 0 where
        the class map disagrees with the objectness."""
        assert self.uses_cam is not None  # set in __post_init__
        return torch.where(self.uses_cam.to(class_index.device)[class_index], 0.5, 0.0)

    @property
    def channels(self) -> int:
        return int(self.mean.shape[1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (float lists, 6 significant digits)."""
        out: dict[str, Any] = {
            "mean": [[float(f"{v:.6g}") for v in row] for row in self.mean.tolist()],
            "direction": [[float(f"{v:.6g}") for v in row] for row in self.direction.tolist()],
            "valid": [bool(v) for v in self.valid.tolist()],
            "uses_cam": [bool(v) for v in self.uses_cam.tolist()],  # type: ignore[union-attr]  # set in __post_init__
            "cam_agreement": [round(float(v), 4) for v in self.cam_agreement.tolist()],  # type: ignore[union-attr]
        }
        if self.basis is not None:
            out["basis"] = self.basis.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObjectnessStats:
        try:
            mean = torch.tensor(data["mean"], dtype=torch.float32)
            direction = torch.tensor(data["direction"], dtype=torch.float32)
            valid = torch.tensor(data["valid"], dtype=torch.bool)
            uses_cam = torch.tensor(data["uses_cam"], dtype=torch.bool) if "uses_cam" in data else None
            agreement = torch.tensor(data["cam_agreement"], dtype=torch.float32) if "cam_agreement" in data else None
            basis = DescriptorBasis.from_dict(data["basis"]) if data.get("basis") else None
            return cls(mean.reshape(len(valid), -1), direction.reshape(len(valid), -1), valid, uses_cam, agreement, basis)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"malformed objectness stats: {exc}") from exc


class DdtAccumulator:
    """Streams per-class descriptor statistics; :meth:`finalize` gives :class:`ObjectnessStats`.

    Args:
        num_classes: K.
        channels: descriptor channels C.
    """

    def __init__(self, num_classes: int, channels: int) -> None:
        if num_classes < 1 or channels < 1:
            raise ValueError(f"need num_classes >= 1 and channels >= 1, got {num_classes}, {channels}")
        self.k, self.c = num_classes, channels
        self.count = torch.zeros(num_classes, dtype=torch.float64)
        self.sum = torch.zeros(num_classes, channels, dtype=torch.float64)
        self.outer = torch.zeros(num_classes, channels, channels, dtype=torch.float64)
        self.cam_sum = torch.zeros(num_classes, dtype=torch.float64)
        self.cam_cross = torch.zeros(num_classes, channels, dtype=torch.float64)
        self.act_count = torch.zeros(num_classes, dtype=torch.float64)
        self.act_sum = torch.zeros(num_classes, dtype=torch.float64)
        self.act_cross = torch.zeros(num_classes, channels, dtype=torch.float64)
        # class-agnostic moments, every image once: the descriptor basis
        self.all_count = 0.0
        self.all_sum = torch.zeros(channels, dtype=torch.float64)
        self.all_outer = torch.zeros(channels, channels, dtype=torch.float64)

    def update(self, features: Tensor, tags: Sequence[Sequence[int]], cams: Sequence[dict[int, Tensor]] | None = None,
               activations: Tensor | None = None) -> None:
        """Add a batch.

        Args:
            features: ``Tensor[N, C, h, w]`` descriptors.
            tags: per image its class indices.
            cams: per image ``{class: Tensor[h, w]}`` raw CAM of that class on the same grid
                (checked against the objectness; without ``activations`` it orients the
                component); missing entries are fine.
            activations: ``Tensor[N, h, w]`` channel sum of the network's final features on the
                same grid (orients the component), or ``None``.
        """
        if features.dim() != 4 or features.shape[1] != self.c:
            raise ValueError(f"features must be Tensor[N, {self.c}, h, w], got {tuple(features.shape)}")
        if len(tags) != features.shape[0]:
            raise ValueError(f"{len(tags)} tag lists for {features.shape[0]} images")
        if activations is not None and tuple(activations.shape) != (features.shape[0], *features.shape[2:]):
            raise ValueError(f"activations must be Tensor[N, h, w] = {(features.shape[0], *features.shape[2:])}, "
                             f"got {tuple(activations.shape)}")
        for i, cls_list in enumerate(tags):
            x = features[i].detach().double().flatten(1).T.cpu()  # [hw, C]
            act = None if activations is None else _standardised(activations[i])
            self.all_count += x.shape[0]
            self.all_sum += x.sum(0)
            self.all_outer += x.T @ x
            for c in {int(v) for v in cls_list}:
                if not 0 <= c < self.k:
                    raise ValueError(f"class index {c} out of range for {self.k} classes (image {i})")
                self.count[c] += x.shape[0]
                self.sum[c] += x.sum(0)
                self.outer[c] += x.T @ x
                cam = None if cams is None else cams[i].get(c)
                if cam is not None:
                    if cam.numel() != x.shape[0]:
                        raise ValueError(f"cam of image {i} has {cam.numel()} cells, descriptors {x.shape[0]}")
                    v = _standardised(cam)  # per image: only the ordering inside matters
                    self.cam_sum[c] += v.sum()
                    self.cam_cross[c] += x.T @ v
                if act is not None:
                    self.act_count[c] += x.shape[0]
                    self.act_sum[c] += act.sum()
                    self.act_cross[c] += x.T @ act

    def finalize(self, separable: Tensor | None = None) -> ObjectnessStats:
        """Per class: the first principal component, oriented by the activations (by the CAM where
        none were given), and whether the CAM agrees with it; classes whose CAM disagrees, or that
        ``separable`` (``Tensor[K]`` bool, :mod:`camcore.separability`) marks as not told apart by
        the classifier, share one component fitted on all their pixels and are boxed by it alone."""
        if separable is not None and tuple(separable.shape) != (self.k,):
            raise ValueError(f"separable must be Tensor[{self.k}] bool, got {tuple(separable.shape)}")
        mean = torch.zeros(self.k, self.c)
        direction = torch.zeros(self.k, self.c)
        agreement = torch.zeros(self.k)
        valid = self.count > 1
        for c in range(self.k):
            if valid[c]:
                mean[c], direction[c], agreement[c] = self._component([c])
        uses_cam = ~valid | (agreement >= 0)
        if separable is not None:
            uses_cam = ~valid | (uses_cam & separable.to(torch.bool).cpu())
        apart = [c for c in range(self.k) if not uses_cam[c]]
        if apart:
            mu, p, _ = self._component(apart)
            for c in apart:
                mean[c], direction[c] = mu, p
        basis = basis_from_moments(self.all_count, self.all_sum, self.all_outer)
        return ObjectnessStats(mean, direction, valid, uses_cam, agreement, basis)

    def _component(self, classes: list[int]) -> tuple[Tensor, Tensor, float]:
        """``(mean[C], unit direction[C], CAM agreement)`` of the pixels of ``classes`` pooled.

        The agreement is the correlation between the per-image standardised CAM and the
        projection on the component, in ``[-1, 1]`` (0 without CAMs)."""
        n = float(self.count[classes].sum())
        mu = self.sum[classes].sum(0) / n
        cov = self.outer[classes].sum(0) / n - torch.outer(mu, mu)
        evals, vecs = torch.linalg.eigh(cov)
        p = vecs[:, -1]
        cam_cov = self.cam_cross[classes].sum(0) / n - mu * float(self.cam_sum[classes].sum() / n)
        if float(self.act_count[classes].sum()) > 0:
            act_cov = self.act_cross[classes].sum(0) / n - mu * float(self.act_sum[classes].sum() / n)
            side = float(p @ act_cov)
        else:
            side = float(p @ cam_cov)
        if side < 0:
            p = -p
        spread = math.sqrt(max(float(evals[-1]), 0.0))
        agreement = float(p @ cam_cov) / spread if spread > 0 else 0.0
        return mu.float(), p.float(), max(-1.0, min(1.0, agreement))


def _standardised(values: Tensor) -> Tensor:
    """``values`` flattened to float64 on the CPU, zero mean and unit standard deviation."""
    v = values.detach().double().cpu().flatten()
    return (v - v.mean()) / (v.std() + 1e-12)


def objectness_maps(descriptors: Tensor, stats: ObjectnessStats, image_index: Tensor, class_index: Tensor) -> Tensor:
    """DDT maps for (image, class) pairs.

    Args:
        descriptors: ``Tensor[N, C, h, w]``.
        stats: fitted statistics with ``C`` channels.
        image_index, class_index: ``Tensor[P]`` long.

    Returns:
        ``Tensor[P, h, w]`` float32 (positive: object); zeros for classes without statistics.
    """
    if descriptors.shape[1] != stats.channels:
        raise ValueError(f"descriptors have {descriptors.shape[1]} channels, stats {stats.channels}")
    dev = descriptors.device
    mu = stats.mean.to(dev)[class_index.to(dev)]  # [P, C]
    p = stats.direction.to(dev)[class_index.to(dev)] * stats.valid.to(dev)[class_index.to(dev), None]
    f = descriptors[image_index.to(dev)].float()
    return torch.einsum("pchw,pc->phw", f, p) - (mu * p).sum(1)[:, None, None]


def per_image_objectness(descriptors: Tensor, cams: Tensor, image_index: Tensor) -> Tensor:
    """Fallback DDT with no fitted statistics: each pair's PCA over its own image's descriptors.

    Args:
        descriptors: ``Tensor[N, C, h, w]``.
        cams: ``Tensor[P, h, w]`` the pairs' CAMs (orient each component towards the object).
        image_index: ``Tensor[P]`` long.

    Returns:
        ``Tensor[P, h, w]`` float32; independent of which other images share the batch.
    """
    out = torch.zeros(cams.shape, dtype=torch.float32, device=cams.device)
    if cams.shape[0] == 0:
        return out
    x = descriptors[image_index.to(descriptors.device)].double().flatten(2).transpose(1, 2)  # [P, hw, C]
    xc = x - x.mean(1, keepdim=True)
    # First principal component scores = the top eigenvector of the Gram matrix xc xc^T (hw x hw),
    # scaled by sqrt of its eigenvalue: one batched eigh instead of an SVD per pair.
    evals, evecs = torch.linalg.eigh(xc @ xc.transpose(1, 2))
    proj = (evecs[..., -1] * evals[..., -1].clamp_min(0).sqrt()[:, None]).float()  # [P, hw]
    cam = cams.float().flatten(1)
    flip = ((cam - cam.mean(1, keepdim=True)) * proj).sum(1) < 0
    proj = torch.where(flip[:, None], -proj, proj)
    usable = (xc.abs().amax(dim=(1, 2)) > 0) & (x.shape[1] >= 2)
    out[usable] = proj[usable].view(-1, *cams.shape[1:])
    return out


@torch.no_grad()
def fit_objectness(
    model: GapClassifier,
    spec: ModelSpec,
    images: Sequence[Any],
    tags: Sequence[Sequence[int]],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    progress: Any = None,
) -> ObjectnessStats:
    """One pass over the training images: per-class DDT statistics for ``model``.

    Args:
        model: a trained :class:`~camcore.models.GapClassifier`.
        spec: its :class:`~camcore.models.ModelSpec`.
        images: PIL images (RGB) or image files; files are decoded one batch at a time (large
            JPEGs at a reduced scale no smaller than ``spec.input_size``), in parallel.
        tags: per image its class indices.
        progress: optional ``callable(done, total)``.

    Returns:
        :class:`ObjectnessStats`; store ``stats.to_dict()`` in ``spec.extra["objectness"]``. When
        ``spec.extra`` records that the classifier does not tell the tags apart on held-out images
        (:func:`camcore.separability.stored_verdict`), every class is boxed by the objectness alone.
    """
    if len(images) != len(tags):
        raise ValueError(f"{len(tags)} tag lists for {len(images)} images")
    dev = torch.device(device)
    normalize = Normalizer(spec, dev, torch.channels_last)
    # forward passes only: the BN-folded inference copy (the same function, faster)
    net, _report = prepare_for_inference(model.to(dev).eval(), normalize(example_batch(spec.input_size)))
    acc: DdtAccumulator | None = None
    # the streaming loader of the infer path (camcore.streaming): loader processes decode ahead on CUDA
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="camcore-objectness") as pool:
        for batch in stream_batches(images, spec.input_size, batch_size, kind=loader_kind(dev), executor=pool,
                                    pin_memory=dev.type == "cuda"):
            if batch.failures:
                raise batch.failures[0][1]
            start = batch.start
            chunk_tags = [list(t) for t in tags[start : start + batch_size]]
            x = normalize(batch.pixels)
            with capture_descriptors(net) as cap:
                feats = net.features(x)
            desc = cap.get("features", feats)
            acc = _accumulate(acc, spec, net, feats, desc, chunk_tags, dev)
            if progress is not None:
                progress(min(start + batch_size, len(images)), len(images))
    if acc is None:
        raise ValueError("fit_objectness needs at least one image")
    verdict = stored_verdict(spec.extra)
    return acc.finalize(None if verdict is None else torch.full((spec.num_classes,), verdict, dtype=torch.bool))


def _accumulate(acc: DdtAccumulator | None, spec: ModelSpec, net: GapClassifier, feats: Tensor, desc: Tensor,
                chunk_tags: list[list[int]], dev: torch.device) -> DdtAccumulator:
    """Add one batch (``feats[N, C, h, w]``, descriptors ``desc[N, D, h', w']``) to ``acc``."""
    img = torch.tensor([i for i, t in enumerate(chunk_tags) for _ in t], dtype=torch.long, device=dev)
    cls = torch.tensor([c for t in chunk_tags for c in t], dtype=torch.long, device=dev)
    cams = class_activation_maps(feats, net.classifier.weight, img, cls)
    per_image: list[dict[int, Tensor]] = [{} for _ in chunk_tags]
    for p, (i, c) in enumerate(zip(img.tolist(), cls.tolist(), strict=True)):
        per_image[i][c] = cams[p]
    if acc is None:
        acc = DdtAccumulator(spec.num_classes, desc.shape[1])
    activations = feats.float().sum(1)
    acc.update(desc, chunk_tags, per_image, activations if activations.shape[1:] == desc.shape[2:] else None)
    return acc
