"""Whether the classifier tells each tag apart on held-out images: a permutation test of its AP.

A class map carries location only where the classifier has learned what the tag looks like. When
the tags cannot be told apart (random tags, or fine-grained classes that the frozen features do
not separate), the head memorises the training images and its class maps point anywhere; boxed
from them, the objects are missed more often than by a fixed box in the middle of the photo.

The train job holds out a seeded share of the images (``train_head``'s validation split), so it
can ask, per class: does the held-out ranking by the class's probability put the tagged images
first more often than chance? The test statistic is the class's average precision (AP) on the
held-out images; its null distribution is the AP of the same scores under random permutations of
the held-out tags (:data:`PERMUTATIONS`). A class is *separable* when the one-sided p-value is
below :data:`LEVEL`. No constant is fitted to a collection: 1 % is the usual test level, and the
statistic's scale does not matter (a permutation test has no threshold on AP).

Some classes cannot be tested: with ``n`` held-out images of which ``m`` are tagged, the smallest
p-value a perfect ranking can reach is ``1 / C(n, m)`` (one tagged image in 70: 0.014).

The verdict that acts is the collection's: its tags are *told apart* when most testable classes
are separable (``None`` when no class is testable: nothing is known, and the product behaves as
before the test existed). One class failing among classes that pass does not set its map aside:
the look-alike cards of ``playing_cards`` are told apart in 5 classes of 6, and the sixth ("ten",
p = 0.09 on 73 held-out photos) still localises cards with its class map (CorLoc@0.5 of the
collection 0.688 with it, 0.654 boxed by the objectness alone). A collection whose tags are not
told apart (random tags; fine-grained tags the frozen features do not separate) is boxed by its
objectness alone, from each map's mean.

The tests and the verdict are stored with the model (``spec.extra[SPEC_KEY]``); the objectness
statistics (:func:`camcore.objectness.fit_objectness`) and the threshold choice
(:func:`camcore.threshold_choice.fit_threshold_choice`) read them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "LEVEL",
    "PERMUTATIONS",
    "SPEC_KEY",
    "ClassSeparability",
    "average_precision",
    "separability",
    "permutation_p_value",
    "ranked_average_precision",
    "stored_tests",
    "stored_verdict",
    "told_apart",
]

SPEC_KEY = "separability"
"""``spec.extra`` key: ``{"told_apart": bool | None, "classes": {name: ClassSeparability.to_dict()}}``."""

LEVEL = 0.01
"""One-sided test level of the permutation test."""

PERMUTATIONS = 999
"""Random relabellings per class: the smallest reachable p-value is ``1 / (PERMUTATIONS + 1)``."""


@dataclass(frozen=True)
class ClassSeparability:
    """The held-out test of one class.

    Attributes:
        ap: average precision of the class's probability on the held-out images (``None``
            without a tagged held-out image).
        prevalence: share of the held-out images tagged with the class.
        positives: tagged held-out images.
        n: held-out images.
        p_value: one-sided permutation p-value of ``ap`` (``None`` when the class is untestable).
        testable: whether a perfect ranking could reach ``p < LEVEL`` at these counts.
        separable: ``p_value < LEVEL`` for a testable class, ``None`` for an untestable one.
    """

    ap: float | None
    prevalence: float
    positives: int
    n: int
    p_value: float | None
    testable: bool
    separable: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {"ap": None if self.ap is None else round(self.ap, 4), "prevalence": round(self.prevalence, 4),
                "positives": self.positives, "n": self.n,
                "p_value": None if self.p_value is None else round(self.p_value, 4),
                "testable": self.testable, "separable": self.separable}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassSeparability:
        try:
            sep = data["separable"]
            return cls(None if data["ap"] is None else float(data["ap"]), float(data["prevalence"]),
                       int(data["positives"]), int(data["n"]),
                       None if data["p_value"] is None else float(data["p_value"]), bool(data["testable"]),
                       None if sep is None else bool(sep))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed separability entry {dict(data)!r}: {exc}") from exc


def ranked_average_precision(hits: Tensor) -> Tensor:
    """``Tensor[P]`` float64 non-interpolated AP of each row of ``hits[P, N]`` (0/1, each row in
    descending score order); ``nan`` for a row without a hit."""
    h = hits.detach().double().cpu()
    ranks = torch.arange(1, h.shape[1] + 1, dtype=torch.float64)
    precision = h.cumsum(1) / ranks
    return (precision * h).sum(1) / h.sum(1)


def average_precision(scores: Tensor, targets: Tensor) -> float | None:
    """Non-interpolated AP of ``scores[N]`` against binary ``targets[N]``; ``None`` if no positive."""
    t = targets.detach().double().cpu()
    if float(t.sum()) == 0:
        return None
    order = torch.argsort(scores.detach().double().cpu(), descending=True, stable=True)
    return float(ranked_average_precision(t[order][None])[0])


def permutation_p_value(scores: Tensor, targets: Tensor, *, permutations: int = PERMUTATIONS,
                        seed: int = 0) -> tuple[float, float]:
    """``(ap, p)``: the AP of ``scores[N]`` for binary ``targets[N]`` and its one-sided p-value
    against ``permutations`` random relabellings (``(1 + #{AP_perm >= AP}) / (1 + permutations)``).

    Ties in ``scores`` are broken by index, the same for every relabelling. ``ValueError`` without
    a positive or a negative target."""
    if scores.shape != targets.shape or scores.dim() != 1:
        raise ValueError(f"scores and targets must be Tensor[N] alike, got {tuple(scores.shape)} and {tuple(targets.shape)}")
    t = targets.detach().double().cpu()
    m = int(t.sum())
    if m == 0 or m == len(t):
        raise ValueError(f"need both tagged and untagged images, got {m} of {len(t)} tagged")
    order = torch.argsort(scores.detach().double().cpu(), descending=True, stable=True)
    observed = float(ranked_average_precision(t[order][None])[0])
    g = torch.Generator().manual_seed(seed)
    shuffled = torch.stack([t[torch.randperm(len(t), generator=g)] for _ in range(permutations)])
    null = ranked_average_precision(shuffled)
    exceed = int((null >= observed - 1e-12).sum())
    return observed, (1 + exceed) / (1 + permutations)


def _testable(n: int, positives: int) -> bool:
    return 0 < positives < n and 1.0 / math.comb(n, positives) < LEVEL


def separability(probs: Tensor, targets: Tensor, names: Sequence[str], *, seed: int = 0) -> dict[str, ClassSeparability]:
    """Per class, the permutation test of its held-out AP (see the module docstring).

    Args:
        probs: ``Tensor[N, K]`` the classifier's probabilities on held-out images.
        targets: ``Tensor[N, K]`` their 0/1 tags.
        names: the K class names.
        seed: seeds the relabellings.
    """
    if probs.shape != targets.shape or probs.dim() != 2 or probs.shape[1] != len(names):
        raise ValueError(f"probs {tuple(probs.shape)} and targets {tuple(targets.shape)} must be [N, {len(names)}]")
    n = int(probs.shape[0])
    tests: dict[str, tuple[float | None, float, int, float | None, bool]] = {}
    for k, name in enumerate(names):
        m = int(targets[:, k].sum())
        ap: float | None = None
        p: float | None = None
        testable = _testable(n, m)
        if testable:
            ap, p = permutation_p_value(probs[:, k], targets[:, k], seed=seed + k)
        else:  # too few held-out images to test: the AP is recorded, no relabelling is drawn
            ap = average_precision(probs[:, k], targets[:, k])
        tests[name] = (ap, m / n if n else 0.0, m, p, testable)
    return {name: ClassSeparability(ap, prev, m, n, p, ok, (p is not None and p < LEVEL) if ok else None)
            for name, (ap, prev, m, p, ok) in tests.items()}


def told_apart(tests: Mapping[str, ClassSeparability]) -> bool | None:
    """The collection's verdict: most testable classes separable (``None``: none testable)."""
    verdicts = [bool(t.separable) for t in tests.values() if t.testable]
    return 2 * sum(verdicts) > len(verdicts) if verdicts else None


def stored_tests(tests: Mapping[str, ClassSeparability]) -> dict[str, Any]:
    """What ``spec.extra[SPEC_KEY]`` holds: the collection's verdict and each class's test."""
    return {"told_apart": told_apart(tests), "classes": {name: t.to_dict() for name, t in tests.items()}}


def stored_verdict(spec_extra: Mapping[str, Any] | None) -> bool | None:
    """Whether the model's classifier tells the collection's tags apart (stored by
    ``train_head``); ``None`` when the model holds no verdict (trained without a held-out split,
    with too few held-out images, or before the test existed)."""
    stored = (spec_extra or {}).get(SPEC_KEY)
    if not stored:
        return None
    if not isinstance(stored, Mapping) or "told_apart" not in stored:
        raise ValueError(f"malformed separability {stored!r}: no 'told_apart'")
    verdict = stored["told_apart"]
    return None if verdict is None else bool(verdict)
