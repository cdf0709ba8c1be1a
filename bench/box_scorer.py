"""The default box scorer, refitted on the development collections and checked leave-one-collection-out.

:data:`camcore.boxes.score.DEFAULT_SCORER` is a logistic model of the four GT-free signals of a
proposed box (:data:`camcore.boxes.score.FEATURES`). This bench shows where such weights come from
and whether they still hold for the maps the product makes now: it takes each collection's
proposals as ``bench/quality.py`` makes them (its cached model and results; computed first when
missing), labels each box right when it overlaps a ground-truth box of its class at IoU >= 0.5
(ground truth serves only as these labels, as in the harness's box AUROC), and fits the logistic
model with each collection weighted the same (a collection with more boxes does not decide the
weights). Printed per collection: its boxes and share of right ones, the AUROC of the shipped
default, of the weights fitted on *the other* collections (what a collection nobody tuned for
gets), and of the weights fitted on all; then the weights fitted on all beside the default's.

    .venv/bin/python bench/box_scorer.py [--dataset DIR ...] [--random-tags K] [--input-size PX] [--cache DIR]

``--random-tags K`` adds, for each collection with one tag per image, a copy whose tags are
replaced by K random ones (``bench/quality.py --random-tags``: tags the classifier cannot tell
apart). A copy holds the same photos as its source, so neither is fitted on when the other is held
out. Without ``--dataset``, every collection under ``../shared/datasets/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quality import (  # noqa: E402
    DATASETS,
    DEFAULT_CACHE,
    Collection,
    DatasetError,
    RunConfig,
    Timing,
    box_params,
    find_collections,
    load_collection,
    load_ground_truth,
    product_results,
    with_random_tags,
)
from camcore.boxes import BoxParams  # noqa: E402
from camcore.boxes.components import nms  # noqa: E402
from camcore.boxes.from_maps import normalized_map  # noqa: E402
from camcore.boxes.rules import boxes_from_normalized  # noqa: E402
from camcore.boxes.score import DEFAULT_SCORER, FEATURES, BoxScorer, box_features, shrunk_logistic  # noqa: E402
from camcore.localizer import ImageResult  # noqa: E402
from camcore.metrics import auroc, box_correctness  # noqa: E402

__all__ = ["Proposals", "collection_proposals", "fit_pooled", "image_proposals", "leave_one_out"]

RIDGE = 1e-3  # a touch of ridge, only so that separable data keep finite weights


@dataclass
class Proposals:
    """A collection's proposed boxes, as the infer job makes them with the default scorer.

    Attributes:
        name: the collection's name.
        source: the name of the collection whose photos it holds (its own name but for a
            random-tag copy).
        signals: ``float64[N, 4]`` :data:`FEATURES` of each box.
        right: ``bool[N]`` IoU >= 0.5 with a ground-truth box of its class.
    """

    name: str
    source: str
    signals: np.ndarray
    right: np.ndarray


def image_proposals(result: ImageResult, params: BoxParams) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One image's boxes from its stored maps as :func:`camcore.boxes.boxes_from_maps` makes them
    (uncalibrated params: no correction, review map or agreement), with their signals.

    Returns:
        ``(boxes[N, 4] xyxy pixels, scores[N] by the default scorer, labels[N] long, signals[N, 4])``, after
        class-aware NMS on the scores, best first.
    """
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    for cls, cam in result.maps.items():
        p = params.for_class(int(cls))
        norm = normalized_map(cam, result.image_size, p)
        if norm is None:
            continue
        boxes, rule_scores = boxes_from_normalized(norm, result.image_size, p)
        parts.append((boxes.float(), box_features(norm, boxes, rule_scores, result.image_size),
                      torch.full((boxes.shape[0],), int(cls), dtype=torch.long)))
    if not parts:
        return torch.zeros((0, 4)), torch.zeros((0,)), torch.zeros((0,), dtype=torch.long), torch.zeros((0, len(FEATURES)))
    boxes, signals, labels = (torch.cat([part[i] for part in parts]) for i in range(3))
    scores = DEFAULT_SCORER(signals)
    keep = nms(boxes, scores, labels, params.nms_iou) if params.nms_iou < 1.0 else torch.argsort(scores, descending=True, stable=True)
    return boxes[keep], scores[keep], labels[keep], signals[keep]


def collection_proposals(collection: Collection, cfg: RunConfig, source: str | None = None) -> Proposals:
    """The proposals of ``collection`` (the harness's cached product path), labelled by its ground
    truth; ``source``: the collection whose photos it holds (default: itself)."""
    product = product_results(collection, cfg, Timing())
    params = box_params(product.spec, cfg)
    gt = load_ground_truth(collection, [None if r is None else r.image_size for r in product.results])
    per_image = [None if r is None else image_proposals(r, params) for r in product.results]
    empty = (torch.zeros((0, 4)), torch.zeros((0,)), torch.zeros((0,), dtype=torch.long))
    _, right, _ = box_correctness([empty if p is None else p[:3] for p in per_image], gt.pairs())
    signals = [p[3].double().numpy() for p in per_image if p is not None]
    return Proposals(collection.name, source or collection.name, np.concatenate(signals) if signals else np.zeros((0, len(FEATURES))), right)


def fit_pooled(collections: Sequence[Proposals], *, ridge: float = RIDGE) -> BoxScorer:
    """Logistic regression of ``right`` on the signals of every collection pooled, each collection
    weighted the same (its boxes share a weight of 1); a small ridge (:func:`shrunk_logistic` toward 0).

    Raises:
        ValueError: no boxes, or every box right (or every box wrong).
    """
    used = [c for c in collections if len(c.right)]
    if not used:
        raise ValueError("no proposals to fit on")
    x = np.concatenate([np.c_[c.signals, np.ones(len(c.right))] for c in used])
    y = np.concatenate([c.right for c in used]).astype(np.float64)
    if y.min() == y.max():
        raise ValueError("the proposals are all right or all wrong: nothing to fit")
    w = np.concatenate([np.full(len(c.right), 1.0 / len(c.right)) for c in used])
    theta = shrunk_logistic(x, y, np.zeros(x.shape[1]), ridge, weights=w)
    return BoxScorer(tuple(float(v) for v in theta[:-1]), float(theta[-1]), int(len(y)))


def ranking(scorer: BoxScorer, proposals: Proposals) -> float:
    """AUROC of ``scorer`` on a collection's proposals (``nan`` without right and wrong boxes)."""
    if not len(proposals.right):
        return float("nan")
    return auroc(scorer(torch.from_numpy(proposals.signals)).double().numpy(), proposals.right)


def leave_one_out(collections: Sequence[Proposals]) -> dict[str, float]:
    """Per collection: the AUROC of the weights fitted on the collections that share no photos with it."""
    return {held.name: ranking(fit_pooled([c for c in collections if c.source != held.source]), held) for held in collections}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--dataset", type=Path, action="append", default=None,
                    help=f"collection folder (repeatable; default: every collection in {DATASETS})")
    ap.add_argument("--random-tags", type=int, default=None, metavar="K",
                    help="also each collection with its tags replaced by K random ones, as bench/quality.py --random-tags")
    ap.add_argument("--input-size", type=int, default=None, help="network input side in px, as given to bench/quality.py")
    ap.add_argument("--arch", default="efficientnet_lite0", help="as given to bench/quality.py")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.random_tags is not None and args.random_tags < 2:
        ap.error(f"--random-tags needs at least 2 tags, got {args.random_tags}")
    try:
        collections: list[tuple[Collection, str | None]] = [(load_collection(r), None) for r in (args.dataset or find_collections(DATASETS))]
    except (DatasetError, ValueError) as exc:
        ap.error(str(exc))
    if args.random_tags is not None:
        for c, _ in list(collections):
            try:
                collections.append((with_random_tags(c, args.random_tags), c.name))
            except ValueError as exc:
                print(f"no random-tag copy of {c.name}: {exc}", file=sys.stderr)
    if len({source or c.name for c, source in collections}) < 2:
        ap.error("leave-one-collection-out needs at least two collections")
    torch.set_num_threads(args.threads)
    cfg = RunConfig(cache=args.cache, arch=args.arch, input_size=args.input_size)
    proposals = [collection_proposals(c, cfg, source) for c, source in collections]
    try:
        held_out = leave_one_out(proposals)
        pooled = fit_pooled(proposals)
    except ValueError as exc:
        print(f"cannot fit the box scorer: {exc}", file=sys.stderr)
        return 1
    print("| collection | boxes | right | AUROC: default | fitted on the others | fitted on all |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p in proposals:
        share = float(p.right.mean()) if len(p.right) else float("nan")
        print(f"| {p.name} | {len(p.right)} | {share:.3f} | {ranking(DEFAULT_SCORER, p):.3f} | {held_out[p.name]:.3f} "
              f"| {ranking(pooled, p):.3f} |")
    names = ", ".join(FEATURES)
    print(f"\nweights ({names}; bias): default {list(DEFAULT_SCORER.weights)}; {DEFAULT_SCORER.bias}")
    print(f"weights ({names}; bias): fitted on all {[round(w, 3) for w in pooled.weights]}; {pooled.bias:.3f}")
    mean = float(np.nanmean(list(held_out.values())))
    print(f"box_scorer: leave_one_out_auroc={mean:.4f} default_auroc={float(np.nanmean([ranking(DEFAULT_SCORER, p) for p in proposals])):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
