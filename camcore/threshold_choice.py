"""A collection's box threshold chosen without ground truth: the crops the classifier recognises best.

The default box rule thresholds each map at its own mean. That suits objects that fill much of
the photo and boxes small objects (cards on a table) with their surroundings. How large the
objects of a collection are is not known from tags, but the classifier can say which boxes hold
its object: crop each candidate box, classify the crop, and compare.

For a sample of tagged images, every tagged class's map is boxed with the default rule and with
each fixed threshold of :data:`CANDIDATES` (fraction of the normalised map's maximum). The top box
of each is cropped from the decoded photo, resized to half the network's input size (224 px for the
default 448) and classified; its score is the sigmoid probability of the tagged class. A candidate
replaces the default only when its crops score higher than the default's crops on the same (image,
class) pairs, by a one-sided paired t-test at level :data:`ALPHA` and by at least :data:`MIN_GAIN`
on average; of several such candidates, the one with the highest mean wins. Where crops of every
size are recognised equally well (large objects, or classes the classifier cannot tell apart), the
default stays. The minimum gain matters where the classifier is sure of almost every crop:
probabilities of 0.994 and 0.997 can differ "significantly" over a few hundred pairs and say
nothing.

No constant here is fitted to a collection: the candidates span the threshold range, :data:`ALPHA`
is the usual 1 % level and :data:`MIN_GAIN` one percentage point of probability.
``bench/quality.py`` reports the choice per collection.

The choice lives in the model's spec (``spec.extra[SPEC_KEY]``, see :func:`model_box_params`), so
every infer and calibrate job of the model starts from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.stats import ttest_rel
from torch import Tensor

from camcore.boxes import BoxParams, boxes_from_normalized, normalized_map
from camcore.images import ImageLoadError
from camcore.localizer import Localizer
from camcore.models import GapClassifier, ModelSpec
from camcore.separability import stored_verdict
from camcore.transforms import Normalizer, preprocess

__all__ = [
    "ALPHA",
    "CANDIDATES",
    "MIN_GAIN",
    "SPEC_KEY",
    "ThresholdChoice",
    "choose_threshold",
    "crop_probabilities",
    "crop_size",
    "decide",
    "fit_threshold_choice",
    "model_box_params",
    "rule_text",
]

SPEC_KEY = "box_defaults"
"""``spec.extra`` key of the model's default ``BoxParams`` fields (a dict; absent: camcore's)."""

REPORT_KEY = "threshold_choice"
"""``spec.extra`` key of the :class:`ThresholdChoice` report that set them."""

CANDIDATES: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
ALPHA = 0.01
MIN_GAIN = 0.01
MIN_PAIRS = 20
"""Fewer (image, class) pairs than this: no test is run and the default stays."""


@dataclass
class ThresholdChoice:
    """What :func:`choose_threshold` measured and chose.

    Attributes:
        threshold: the chosen fixed threshold, or ``None`` (the default mean rule stays).
        pairs: (image, class) pairs compared.
        mean_probability: ``"mean"`` (the default rule) and each candidate (``"0.5"``) -> mean
            probability of the tagged class on the crops of its top boxes.
        p_values: candidate -> one-sided paired t-test p-value against the default rule.
        reason: one line saying why.
    """

    threshold: float | None
    pairs: int
    mean_probability: dict[str, float] = field(default_factory=dict)
    p_values: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "pairs": self.pairs, "mean_probability": dict(self.mean_probability),
                "p_values": dict(self.p_values), "reason": self.reason}

    def stored_in(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        """A model spec's ``extra`` with this choice: the report under :data:`REPORT_KEY`, a chosen
        threshold under :data:`SPEC_KEY` (read back by :func:`model_box_params`)."""
        out = {**dict(extra or {}), REPORT_KEY: self.to_dict()}
        if self.threshold is not None:
            out[SPEC_KEY] = {"threshold": self.threshold}
        return out


def rule_text(threshold: float | None) -> str:
    """The box rule in words: ``"0.5 of each map's maximum"``, or ``"each map's mean"`` (``None``)."""
    return f"{threshold:g} of each map's maximum" if threshold is not None else "each map's mean"


def _too_few(pairs: int) -> ThresholdChoice:
    return ThresholdChoice(None, pairs, reason=f"{pairs} (image, class) pairs; {MIN_PAIRS} needed to test")


def model_box_params(spec: ModelSpec, overrides: Mapping[str, Any] | None = None) -> BoxParams:
    """The model's default ``BoxParams``: camcore's defaults with ``spec.extra[SPEC_KEY]`` applied,
    then ``overrides`` (a job's chosen fields or a calibration; these win). ``ValueError`` on bad fields."""
    base = dict((spec.extra or {}).get(SPEC_KEY) or {})
    return BoxParams.from_dict({**base, **dict(overrides or {})})


def crop_size(spec: ModelSpec) -> int:
    """Side in pixels crops are classified at: half the network's input (a crop is at most the
    whole photo; small objects are enlarged less than at the full input), at least 32."""
    return max(32, int(spec.input_size) // 2)


def crop_probabilities(model: GapClassifier, spec: ModelSpec, crops: Sequence[Image.Image], classes: Sequence[int], *,
                       device: str | torch.device = "cpu", batch_size: int = 64,
                       progress: Callable[[int, int], None] | None = None) -> Tensor:
    """Sigmoid probability of ``classes[i]`` on ``crops[i]`` resized to :func:`crop_size` -> ``Tensor[M]``;
    ``progress(done, total)`` after each batch."""
    if len(crops) != len(classes):
        raise ValueError(f"{len(classes)} classes for {len(crops)} crops")
    norm = Normalizer(spec, device)
    out = torch.empty(len(crops))
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            part = crops[start:start + batch_size]
            probs = torch.sigmoid(model(norm(preprocess(part, crop_size(spec))))).float().cpu()
            idx = torch.tensor(classes[start:start + batch_size], dtype=torch.long)
            out[start:start + len(part)] = probs[torch.arange(len(part)), idx]
            if progress is not None:
                progress(start + len(part), len(crops))
    return out


def _crop(image: Image.Image, box: Tensor, image_size: tuple[int, int]) -> Image.Image:
    """``box`` (xyxy, pixels of an image of ``image_size``) cut from ``image`` (possibly decoded smaller)."""
    sx, sy = image.width / image_size[0], image.height / image_size[1]
    x1, y1, x2, y2 = (float(v) for v in box)
    left, top = int(np.floor(x1 * sx)), int(np.floor(y1 * sy))
    right, bottom = max(int(np.ceil(x2 * sx)), left + 1), max(int(np.ceil(y2 * sy)), top + 1)
    return image.crop((left, top, right, bottom))


def choose_threshold(
    model: GapClassifier,
    spec: ModelSpec,
    images: Sequence[Image.Image],
    maps: Sequence[Mapping[int, Tensor]],
    image_sizes: Sequence[tuple[int, int]],
    tags: Sequence[Sequence[int]],
    params: BoxParams | None = None,
    *,
    device: str | torch.device = "cpu",
    candidates: Sequence[float] = CANDIDATES,
    alpha: float = ALPHA,
    progress: Callable[[int, int], None] | None = None,
) -> ThresholdChoice:
    """Choose the collection's box threshold from the classifier's view of the crops (module doc).

    Args:
        model: the trained classifier (the one that made ``maps``).
        spec: its spec.
        images: decoded photos (any scale: boxes are scaled from ``image_sizes`` to them).
        maps: per image, tagged class -> raw low-resolution map ``Tensor[h, w]`` (as stored).
        image_sizes: per image (width, height) in pixels of the file, the frame of the boxes.
        tags: per image its class indices (the maps of other classes are not used).
        params: the rule the candidates replace the threshold of (default: ``BoxParams()``).
        progress: ``progress(done, total)`` per batch of crops classified.

    Returns:
        :class:`ThresholdChoice`; ``threshold`` is ``None`` when the default rule stays.
    """
    if not (len(images) == len(maps) == len(image_sizes) == len(tags)):
        raise ValueError("images, maps, image_sizes and tags must have the same length")
    base = params or BoxParams()
    crops: list[Image.Image] = []
    classes: list[int] = []
    rows: list[list[int]] = []  # per pair: index into crops per name (same box: same crop)
    for image, per_class, size, wanted in zip(images, maps, image_sizes, tags, strict=True):
        for cls in sorted(set(int(c) for c in wanted)):
            if cls not in per_class:
                continue
            p = base.for_class(cls)
            norm = normalized_map(per_class[cls], size, p)
            if norm is None:
                continue
            tops = []
            for threshold in (p.threshold, *candidates):
                boxes, _ = boxes_from_normalized(norm, size, replace(p, threshold=threshold))
                tops.append(boxes[0] if len(boxes) else None)
            if any(b is None for b in tops):
                continue
            seen: dict[tuple[int, ...], int] = {}
            row = []
            for box in tops:
                key = tuple(int(round(float(v))) for v in box)  # type: ignore[union-attr]
                if key not in seen:
                    seen[key] = len(crops)
                    crops.append(_crop(image, box, size))  # type: ignore[arg-type]
                    classes.append(cls)
                row.append(seen[key])
            rows.append(row)
    if len(rows) < MIN_PAIRS:  # decided before any crop is classified
        return _too_few(len(rows))
    probs = crop_probabilities(model, spec, crops, classes, device=device, progress=progress).numpy()
    return decide(probs[np.array(rows)], candidates, alpha=alpha)


def decide(table: np.ndarray, candidates: Sequence[float], *, alpha: float = ALPHA,
           min_gain: float = MIN_GAIN) -> ThresholdChoice:
    """The choice from crop probabilities ``table[pairs, 1 + len(candidates)]``: column 0 the default
    rule's top box, column ``k`` the top box at ``candidates[k - 1]`` (module doc)."""
    if table.ndim != 2 or table.shape[1] != 1 + len(candidates):
        raise ValueError(f"table must be [pairs, {1 + len(candidates)}], got {table.shape}")
    names = ["mean", *(f"{t:g}" for t in candidates)]
    pairs = int(table.shape[0])
    if pairs < MIN_PAIRS:
        return _too_few(pairs)
    means = {n: float(table[:, k].mean()) for k, n in enumerate(names)}
    p_values: dict[str, float] = {}
    for k, n in enumerate(names[1:], start=1):
        diff = table[:, k] - table[:, 0]
        if not np.any(diff):  # the same boxes: nothing to test
            p_values[n] = 1.0
        else:
            p_values[n] = float(ttest_rel(table[:, k], table[:, 0], alternative="greater").pvalue)
    better = [n for n in names[1:] if p_values[n] < alpha and means[n] - means["mean"] >= min_gain]
    if not better:
        return ThresholdChoice(None, pairs, means, p_values,
                               "no threshold's crops are recognised better than the mean rule's "
                               f"(by p < {alpha:g} and {min_gain:g} or more)")
    best = max(better, key=lambda n: means[n])
    return ThresholdChoice(float(best), pairs, means, p_values,
                           f"crops at threshold {best} are recognised better than the mean rule's "
                           f"({means[best]:.3f} vs {means['mean']:.3f}, p = {p_values[best]:.2g})")


MAX_IMAGES = 256
"""Tagged images sampled (seeded) by :func:`fit_threshold_choice`; the t-test needs a few hundred pairs
to see a real difference, and the crops cost about one model pass per image at this sample."""


def fit_threshold_choice(
    model: GapClassifier,
    spec: ModelSpec,
    paths: Sequence[str | Any],
    tags: Sequence[Sequence[int]],
    *,
    device: str | torch.device = "cpu",
    max_images: int = MAX_IMAGES,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> ThresholdChoice:
    """What the train job runs after fitting the objectness statistics: localise a seeded sample of
    at most ``max_images`` tagged files with the default rule and :func:`choose_threshold` on them.

    Files that fail to load are left out. ``spec`` must already hold the objectness statistics
    (the maps are the infer job's maps). ``progress(done, total)`` is called per batch of crops; an
    exception it raises (a cancellation) propagates. When the classifier does not tell the tags
    apart on held-out images (:func:`camcore.separability.stored_verdict`), the mean rule stays
    without a test."""
    if stored_verdict(spec.extra) is False:  # crops of tags the classifier does not tell apart say nothing
        return ThresholdChoice(None, 0, reason="the classifier does not tell the tags apart on held-out images, "
                                               "so its view of the crops cannot choose")
    tagged = [i for i, t in enumerate(tags) if t]
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(tagged, size=min(max_images, len(tagged)), replace=False).tolist()) if tagged else []
    localizer = Localizer(model, spec, device=device, params=BoxParams())
    try:
        loaded = localizer.load_images([paths[i] for i in pick])
        ok = [(i, im) for i, im in zip(pick, loaded, strict=True) if not isinstance(im, ImageLoadError)]
        images = [im for _, im in ok]
        wanted = [sorted(set(int(c) for c in tags[i])) for i, _ in ok]
        results = localizer.localize(images, wanted) if images else []
    finally:
        localizer.close()
    return choose_threshold(model, spec, images, [r.maps for r in results], [r.image_size for r in results], wanted,
                            device=device, progress=progress)
