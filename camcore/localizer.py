"""Images in, boxes + maps out: :class:`Localizer` and its per-image :class:`ImageResult`.

Images are resized into a uint8 batch and normalised on the device (:mod:`camcore.transforms`),
the network runs as its inference copy (:mod:`camcore.prepare`). One forward pass gives the
logits and the maps (the map method ``params.method``, :mod:`camcore.methods`); boxes are
extracted per map at a working resolution (:mod:`camcore.boxes`) and scaled to the original
image's pixels.
:meth:`Localizer.localize_files` streams files through these stages with every stage overlapped
on a GPU worker (:mod:`camcore.streaming` decodes ahead in worker processes,
:mod:`camcore.boxes.workers` computes boxes beside the next forward pass, and
:mod:`camcore.forward_choice` picks the fastest forward variant by a measured probe).

Extension points (used to plug in better defaults without changing signatures):

- ``BoxParams.method`` names a map method (a :class:`camcore.methods.MapMethod` subclass)
  registered with :func:`camcore.methods.register_map_method`; ``"ddt_cam"`` and ``"cam"`` are
  built in;
- ``BoxParams.mode`` names a box rule registered with :func:`camcore.boxes.register_box_rule`
  (``rule(norm_map[H, W], image_size, params) -> (boxes[M, 4], scores[M])``); ``"objects"``,
  ``"largest"`` and ``"multi"`` are built in.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import torch
from PIL import Image
from torch import Tensor

from camcore.boxes import BoxParams, BoxWorkers, MapsOfImage
from camcore.cam import CamOutput, align_maps, select_pairs
from camcore.forward_choice import ForwardVariant, choose_forward, default_variant
from camcore.images import ImageLoadError, ImageSource, load_images
from camcore.methods import map_method
from camcore.models import GapClassifier, ModelSpec
from camcore.prepare import InferenceReport, example_batch, prepare_for_inference
from camcore.streaming import LoadedBatch, default_loader_workers, loader_kind, stream_batches
from camcore.transforms import Normalizer, preprocess

__all__ = ["ImageResult", "Localizer", "Tags"]

#: Per image the class indices to localise (its tags), or ``None`` for its ``top_k`` predicted
#: classes; ``None`` for the whole sequence: every image's predicted classes.
Tags = Sequence[Sequence[int] | None] | None


@dataclass
class ImageResult:
    """Localisation of one image (all tensors on the CPU).

    Attributes:
        boxes: ``Tensor[N, 4]`` xyxy float pixels of the given image.
        scores: ``Tensor[N]`` box score: estimated probability that the box is right
            (:mod:`camcore.boxes.score`; times the class probability for predicted, untagged classes).
        labels: ``Tensor[N]`` long class indices into ``spec.class_names``.
        maps: class index -> raw low-resolution map ``Tensor[h, w]`` float32.
        class_scores: ``Tensor[K]`` sigmoid of the logits.
        image_size: (width, height) of the image in pixels.
        codes: ``Tensor[d, h, w]`` float16 descriptor codes on the maps' grid (the descriptors on
            the collection's principal components, :mod:`camcore.descriptor_basis`), or ``None``
            when the model has no basis (the map method is not ``ddt_cam``, or it predates them).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    maps: dict[int, Tensor]
    class_scores: Tensor
    image_size: tuple[int, int]
    codes: Tensor | None = None


class Localizer:
    """Batched localisation with a GAP classifier.

    Args:
        model: the classifier (moved to ``device`` and put in eval mode).
        spec: its spec (input size, normalisation, class names).
        device: where the forward pass runs.
        params: box parameters (default :class:`BoxParams`).
        batch_size: images per forward pass in :meth:`localize`.
        autocast_dtype: e.g. ``torch.bfloat16`` to run the forward under ``torch.autocast``;
            ``None`` runs in float32.
        align: resample maps by the architecture's sub-cell offset (``spec.map_shift``) so that
            they line up with the image when upsampled (see :func:`camcore.cam.align_maps`).
            ``ImageResult.maps`` then hold the aligned maps. Off by default: on real photos
            (``bench/quality.py``, raccoon-kangaroo, 448 px) the default CAM + DDT maps localise
            better unshifted (CorLoc 0.802 vs 0.775); pass ``True`` for the synthetic-exact
            alignment.
        channels_last: run convolutions in channels-last memory format (about 1.8x faster for
            EfficientNet-Lite0 on CPU; also what tensor cores want).
        prepare: run an inference copy of ``model`` with BatchNorm folded into the convolutions
            (:func:`camcore.prepare.prepare_for_inference`: the same function, checked on an
            example batch; about 1.3x faster on CPU). ``model`` is moved to ``device`` but not
            otherwise changed; :attr:`model` is the network that runs.
        host_threads: threads for the CPU work around the forward pass on the ``"threads"``
            loader: decoding (:meth:`load_images`) and resizing (:meth:`preprocess`) run in
            parallel on them, in their own phase (not overlapped with the forward pass, whose
            threads they would stall). ``1``: no threads.
        probe: pick the forward variant (prepared or as loaded, layout, bf16/fp16, batch size) by
            a short measured probe (:func:`camcore.forward_choice.choose_forward`, cached per
            process). ``None`` (default): on CUDA only; a CPU keeps ``prepare``,
            ``channels_last``, ``autocast_dtype`` and ``batch_size`` as given (its measured best).
        loader: how :meth:`localize_files` decodes: ``"processes"`` (DataLoader worker processes,
            batches decoded while the current one runs) or ``"threads"`` (phased); ``None``:
            :func:`camcore.streaming.loader_kind` of the device (processes on CUDA).
        loader_workers: loader processes (default: half the cores).
        box_workers: processes computing boxes while the next batch runs
            (:class:`camcore.boxes.workers.BoxWorkers`); ``0``: on the calling thread. ``None``:
            ``0`` on a CPU (the forward pass uses every core), on CUDA the cores the loader leaves
            minus one.

    Attributes:
        normalize: the :class:`camcore.transforms.Normalizer` (uint8 batch -> normalised float on
            the device).
        executor: the host thread pool (``None`` when ``host_threads == 1``).
        variant: the :class:`camcore.forward_choice.ForwardVariant` that runs.
        boxes: the :class:`camcore.boxes.workers.BoxWorkers`.
        map_method: the :class:`camcore.methods.MapMethod` of ``params.method`` bound to
            :attr:`model` (its hooks are registered only while a batch runs).
    """

    def __init__(
        self,
        model: GapClassifier,
        spec: ModelSpec,
        *,
        device: str | torch.device = "cpu",
        params: BoxParams | None = None,
        batch_size: int = 16,
        autocast_dtype: torch.dtype | None = None,
        align: bool = False,
        channels_last: bool = True,
        prepare: bool = True,
        host_threads: int = 2,
        probe: bool | None = None,
        loader: str | None = None,
        loader_workers: int | None = None,
        box_workers: int | None = None,
    ) -> None:
        if host_threads < 1:
            raise ValueError(f"host_threads must be >= 1, got {host_threads}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.params = params or BoxParams()
        method = map_method(self.params.method)  # an unknown name fails here, before any work
        self.host_threads = host_threads
        self.executor: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=host_threads, thread_name_prefix="camcore-host") if host_threads > 1 else None)
        self.device = torch.device(device)
        self.spec = spec
        model = model.to(self.device).eval()
        self.inference_report: InferenceReport | None = None
        prepared: dict[str, GapClassifier] = {}

        def network(variant: ForwardVariant) -> GapClassifier:
            # the network of a variant: the inference copy (made once) or the model as loaded
            if not variant.prepared:
                return model.to(memory_format=variant.memory_format)
            if "net" not in prepared:
                norm = Normalizer(spec, self.device, variant.memory_format)
                prepared["net"], self.inference_report = prepare_for_inference(
                    model, norm(example_batch(spec.input_size)), memory_format=variant.memory_format)
            return prepared["net"].to(memory_format=variant.memory_format)

        if probe if probe is not None else self.device.type == "cuda":
            self.variant = choose_forward(network, spec.input_size, self.device, batch_size=batch_size,
                                          autocast_dtype=autocast_dtype, probe=True,
                                          cache_key=(spec.arch, spec.input_size, spec.num_classes))
        else:  # as given (on a CPU: prepared, channels-last, float32 is the measured best)
            self.variant = default_variant(batch_size, autocast_dtype, channels_last=channels_last, prepared=prepare)
        self.memory_format = self.variant.memory_format
        self.normalize = Normalizer(spec, self.device, self.memory_format)
        self.model = network(self.variant)
        self.batch_size = self.variant.batch_size
        self.loader = loader or loader_kind(self.device)
        self.loader_workers = default_loader_workers() if loader_workers is None else loader_workers
        if box_workers is None:
            box_workers = max(1, default_loader_workers() * 2 - self.loader_workers - 1) if self.device.type == "cuda" else 0
        self.boxes = BoxWorkers(box_workers)
        self.map_method = method(self.model, spec)  # hooks only while a batch runs
        self.autocast_dtype = self.variant.autocast_dtype
        self.shift_cells = -spec.map_shift / spec.feature_stride if align else 0.0

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """``Tensor[N, 3, S, S]`` uint8 CPU batch for :meth:`localize_batch` (resized in parallel
        on the host threads)."""
        return preprocess(images, self.spec.input_size, executor=self.executor, parts=self.host_threads)

    def load_images(self, sources: Sequence[ImageSource]) -> list[Image.Image | ImageLoadError]:
        """:func:`camcore.images.load_images` on the host threads, decoding large JPEGs at a
        reduced scale no smaller than the network input (boxes stay in the files' pixels)."""
        return load_images(sources, min_size=self.spec.input_size, executor=self.executor)

    def close(self) -> None:
        """Stop the host threads and box processes (the localizer still works afterwards,
        single-threaded)."""
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None
            self.host_threads = 1
        self.boxes.close()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    @torch.no_grad()
    def _maps_batch(self, batch: Tensor, tags: Tags, top_k: int) -> tuple[Tensor, list[dict[int, Tensor]], list[Tensor | None]]:
        """One forward pass: ``(class probabilities[N, K], per image {class: raw map[h, w]}, per
        image its float16 codes[d, h, w] or None)`` on the CPU."""
        n = batch.shape[0]
        x = self.normalize(batch)
        if tags is not None and all(t is None for t in tags):
            tags = None  # every image's predicted classes
        with self._autocast():
            if tags is not None and any(t is None for t in tags):
                out = self._mixed_maps(x, tags, top_k)
            else:
                out = self.map_method(x, cast("Sequence[Sequence[int]] | None", tags), top_k=top_k)
        probs = torch.sigmoid(out.logits).cpu()
        maps = align_maps(out.maps, self.shift_cells).cpu()
        img_idx = out.image_index.cpu().tolist()
        cls_idx = out.class_index.cpu().tolist()
        per_image: list[dict[int, Tensor]] = [{} for _ in range(n)]
        for p, (i, c) in enumerate(zip(img_idx, cls_idx, strict=True)):
            per_image[i][c] = maps[p]
        codes: list[Tensor | None] = [None] * n
        if out.codes is not None:
            d, h, w = out.codes.shape[1:]
            aligned = align_maps(out.codes.float().reshape(n * d, h, w), self.shift_cells).reshape(n, d, h, w)
            codes = list(aligned.half().cpu().unbind(0))
        return probs, per_image, codes

    def localize_batch(
        self,
        batch: Tensor,
        image_sizes: Sequence[tuple[int, int]],
        tags: Tags = None,
        *,
        top_k: int = 1,
    ) -> list[ImageResult]:
        """Localise a preprocessed batch (see :meth:`preprocess`).

        Args:
            batch: uint8 ``Tensor[N, 3, S, S]``.
            image_sizes: (width, height) of each original image.
            tags: per image the class indices to localise, or ``None`` for its ``top_k``
                predicted classes (:data:`Tags`).
        """
        n = batch.shape[0]
        if len(image_sizes) != n:
            raise ValueError(f"{len(image_sizes)} image sizes for {n} images")
        if n == 0:
            return []
        sizes = [(int(w), int(h)) for w, h in image_sizes]
        probs, per_image, codes = self._maps_batch(batch, tags, top_k)
        predicted = [tags is None or tags[i] is None for i in range(n)]
        job = self.boxes.submit(self.params, self._box_inputs(probs, per_image, sizes, predicted, codes))
        return [ImageResult(b, s, lab, per_image[i], probs[i], sizes[i], codes[i]) for i, (b, s, lab) in enumerate(job.result())]

    def _mixed_maps(self, x: Tensor, tags: Sequence[Sequence[int] | None], top_k: int) -> CamOutput:
        """The map method's forward pass for a batch of tagged and untagged images: each tagged
        image's classes, each untagged one's ``top_k`` predicted classes (what two separate
        passes would give, from one)."""
        method = self.map_method
        with method:  # hooks for this pass, as the method's own call registers them
            features = method.model.features(x)
            logits = method.model.head(features)
            predicted = select_pairs(logits, None, top_k=top_k)[1].view(len(tags), -1).tolist()
            image_index, class_index = select_pairs(logits, [predicted[i] if t is None else t for i, t in enumerate(tags)])
            maps = method.maps(features, logits, image_index, class_index)
            codes = method.codes(features)
        return CamOutput(logits=logits.float(), maps=maps.float(), image_index=image_index, class_index=class_index,
                         codes=codes)

    @staticmethod
    def _box_inputs(probs: Tensor, per_image: list[dict[int, Tensor]], sizes: Sequence[tuple[int, int]],
                    predicted: Sequence[bool], codes: Sequence[Tensor | None]) -> list[MapsOfImage]:
        # a tagged class is known to be present: its boxes are scored on the map alone
        return [MapsOfImage(per_image[i], sizes[i], probs[i] if predicted[i] else None, codes[i]) for i in range(len(per_image))]

    def _stream(self, batches: Iterable[LoadedBatch], tags: Tags, top_k: int) -> Iterator[tuple[int, ImageResult | ImageLoadError]]:
        """Forward pass per batch as it arrives; its boxes are computed (by :attr:`boxes`) while
        the next batch runs. Yields ``(position, result or load error)`` in source order."""
        pending: deque[tuple[LoadedBatch, Tensor, list[dict[int, Tensor]], list[Tensor | None], Any]] = deque()
        ahead = 1 if self.boxes.processes > 0 else 0  # batches whose boxes may be in flight

        def finish(item: tuple[LoadedBatch, Tensor, list[dict[int, Tensor]], list[Tensor | None], Any],
                   ) -> Iterator[tuple[int, ImageResult | ImageLoadError]]:
            batch, probs, per_image, codes, job = item
            done: dict[int, ImageResult | ImageLoadError] = dict(batch.failures)
            for row, (b, s, lab) in enumerate(job.result()):
                done[batch.positions[row]] = ImageResult(b, s, lab, per_image[row], probs[row], batch.sizes[row], codes[row])
            yield from sorted(done.items())

        for batch in batches:
            chunk_tags = None if tags is None else [tags[p] for p in batch.positions]
            codes: list[Tensor | None] = []
            if batch.positions:
                probs, per_image, codes = self._maps_batch(batch.pixels, chunk_tags, top_k)
            else:
                probs, per_image = torch.zeros((0, self.spec.num_classes)), []
            predicted = [True] * len(batch.positions) if chunk_tags is None else [t is None for t in chunk_tags]
            job = self.boxes.submit(self.params, self._box_inputs(probs, per_image, batch.sizes, predicted, codes))
            pending.append((batch, probs, per_image, codes, job))
            while len(pending) > ahead:
                yield from finish(pending.popleft())
        while pending:
            yield from finish(pending.popleft())

    def localize_files(
        self,
        sources: Sequence[ImageSource | Image.Image],
        tags: Tags = None,
        *,
        top_k: int = 1,
    ) -> Iterator[tuple[int, ImageResult | ImageLoadError]]:
        """Localise image files as a stream: decoding, forward passes and boxes overlap.

        Files are decoded and resized by :func:`camcore.streaming.stream_batches` (worker
        processes on CUDA, decoding the next batches while the current one runs; the phased host
        threads on a CPU), and each batch's boxes are computed by :attr:`boxes` while the next
        batch runs. Per-file behaviour is :func:`camcore.images.load_image`'s.

        Args:
            sources: image files (or loaded ``PIL`` images). Any sequence: one stream (one set
                of loader processes) can serve a whole job, its results read as they come.
            tags: per source the class indices to localise, or ``None`` for that source's
                ``top_k`` predicted classes (tagged and untagged images share batches); ``None``:
                every source's predicted classes. Read when a source's batch reaches the
                forward pass, so it may be filled lazily.

        Yields:
            ``(position in sources, ImageResult or ImageLoadError)``, in source order.
        """
        if tags is not None and len(tags) != len(sources):
            raise ValueError(f"{len(tags)} tag lists for {len(sources)} images")
        batches = stream_batches(sources, self.spec.input_size, self.batch_size, kind=self.loader,
                                 workers=self.loader_workers, executor=self.executor, parts=self.host_threads,
                                 pin_memory=self.device.type == "cuda")
        yield from self._stream(batches, tags, top_k)

    def localize(
        self,
        images: Sequence[Image.Image],
        tags: Sequence[Sequence[int]] | None = None,
        *,
        top_k: int = 1,
    ) -> list[ImageResult]:
        """Localise ``images`` (RGB PIL images, e.g. from :func:`camcore.images.load_image`).

        Args:
            images: the images.
            tags: per image the class indices to localise (its tags), or ``None`` to localise
                each image's ``top_k`` predicted classes.
            top_k: classes per image when ``tags`` is ``None``.

        Returns:
            One :class:`ImageResult` per image, in order; boxes in each image's own pixels (its
            :func:`camcore.images.original_size`, also when it was decoded at a reduced scale).
        """
        if tags is not None and len(tags) != len(images):
            raise ValueError(f"{len(tags)} tag lists for {len(images)} images")
        batches = stream_batches(images, self.spec.input_size, self.batch_size, kind="threads", executor=self.executor,
                                 parts=self.host_threads)
        return [result for _position, result in self._stream(batches, tags, top_k)]  # type: ignore[misc]  # decoded images: no ImageLoadError here
