"""Localisation metrics against ground-truth boxes (all boxes xyxy float pixels of the image).

Inputs, per image ``i``:

- predictions: ``(boxes[N, 4], scores[N], labels[N])`` -- or any object with ``.boxes``,
  ``.scores``, ``.labels`` (e.g. :class:`camcore.localizer.ImageResult`);
- ground truth: ``(boxes[M, 4], labels[M])`` -- or an object with ``.boxes``, ``.labels``.

Labels are class indices (ints). Functions:

- :func:`corloc` -- CorLoc / GT-known Loc: share of (image, present class) pairs whose top-scoring
  box of that class has IoU >= 0.5 with some ground-truth box of that class (no box = miss).
- :func:`max_box_acc_v2` -- MaxBoxAccV2 (Choe et al., CVPR 2020) from maps: for each CAM threshold,
  boxes of all connected components; a pair is correct if the best IoU of any of its boxes with any
  ground-truth box reaches delta; best threshold per delta; averaged over delta in {0.3, 0.5, 0.7}.
- :func:`coco_ap` -- COCO AP (IoU .50:.95) and AP50 of all scored boxes via pycocotools (and,
  with ``per_class=True``, per class).
- :func:`box_acc_table` / :func:`max_box_acc_from_table` -- MaxBoxAccV2's per-pair correctness
  table, so that one pass over the maps gives the metric for any subset of pairs (e.g. per class).

Box-score quality (does the score of a box predict that it is right?):

- :func:`box_correctness` -- every proposed box of a collection with its score, label and whether
  it is correct (IoU >= 0.5 with a ground-truth box of its class in its image).
- :func:`auroc` -- rank-based area under the ROC curve of scores for a boolean outcome
  (Mann-Whitney U; ties count one half).
- :func:`top_fraction_precision` -- precision of the top-scored share of the boxes (ties at the
  boundary shared evenly), next to the overall precision ``correct.mean()``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage
from scipy.stats import rankdata
from torch import Tensor
from torchvision.ops import box_iou

from camcore.boxes import normalize_map, upsample_map, working_shape

__all__ = [
    "auroc",
    "box_acc_table",
    "box_correctness",
    "coco_ap",
    "corloc",
    "max_box_acc_from_table",
    "max_box_acc_v2",
    "top_fraction_precision",
]

_EIGHT = np.ones((3, 3), dtype=bool)


def _pred(p: Any) -> tuple[Tensor, Tensor, Tensor]:
    if hasattr(p, "boxes"):
        b, s, lab = p.boxes, p.scores, p.labels
    else:
        b, s, lab = p
    b, s, lab = torch.as_tensor(b, dtype=torch.float32), torch.as_tensor(s, dtype=torch.float32), torch.as_tensor(lab)
    b = b.reshape(-1, 4)
    if not (len(b) == len(s) == len(lab)):
        raise ValueError(f"prediction has {len(b)} boxes, {len(s)} scores, {len(lab)} labels")
    return b, s, lab.long()


def _gt(g: Any) -> tuple[Tensor, Tensor]:
    if hasattr(g, "boxes"):
        b, lab = g.boxes, g.labels
    else:
        b, lab = g
    b, lab = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4), torch.as_tensor(lab).long()
    if len(b) != len(lab):
        raise ValueError(f"ground truth has {len(b)} boxes and {len(lab)} labels")
    return b, lab


def corloc(predictions: Sequence[Any], ground_truth: Sequence[Any], *, iou_threshold: float = 0.5) -> float:
    """CorLoc (GT-known Loc) at ``iou_threshold``.

    Args:
        predictions: per image ``(boxes[N, 4], scores[N], labels[N])`` or an ``ImageResult``.
        ground_truth: per image ``(boxes[M, 4], labels[M])``.

    Returns:
        Share in [0, 1] of (image, class present in the ground truth) pairs localised; ``nan``
        if there is no ground-truth box at all.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} ground-truth images")
    hits = total = 0
    for p, g in zip(predictions, ground_truth, strict=True):
        pb, ps, pl = _pred(p)
        gb, gl = _gt(g)
        for c in torch.unique(gl).tolist():
            total += 1
            mine = pl == c
            if not bool(mine.any()):
                continue
            top = pb[mine][int(torch.argmax(ps[mine]))]
            if float(box_iou(top[None], gb[gl == c]).max()) >= iou_threshold:
                hits += 1
    return hits / total if total else float("nan")


def _component_boxes_px(mask: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """``float32[B, 4]`` xyxy pixel boxes of the 8-connected components of ``mask`` (grid -> image)."""
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if count == 0:
        return np.zeros((0, 4), dtype=np.float32)
    gh, gw = mask.shape
    w, h = image_size
    objs = ndimage.find_objects(labels)
    arr = np.array([[s[1].start * w / gw, s[0].start * h / gh, s[1].stop * w / gw, s[0].stop * h / gh] for s in objs if s is not None])
    return arr.astype(np.float32)


def _max_iou(boxes: np.ndarray, gt: np.ndarray) -> float:
    """Largest IoU between any of ``boxes[B, 4]`` and any of ``gt[M, 4]`` (float32, as ``box_iou``)."""
    lt = np.maximum(boxes[:, None, :2], gt[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], gt[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_g = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    union = area_b[:, None] + area_g[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return float(iou.max())


def _thresholds(thresholds: Sequence[float] | None) -> np.ndarray:
    return np.asarray(thresholds if thresholds is not None else np.arange(0.0, 1.0, 0.01), dtype=np.float64)


def box_acc_table(
    maps: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    *,
    thresholds: Sequence[float] | None = None,
    iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    working_size: int = 224,
) -> np.ndarray:
    """Per (image, class) pair, threshold and delta: is the pair localised?

    Args: as :func:`max_box_acc_v2`.

    Returns:
        ``bool ndarray[P, T, D]``: entry ``[p, t, d]`` is ``True`` when some box of a connected
        component of pair ``p``'s map above ``thresholds[t]`` has IoU >= ``iou_thresholds[d]`` with
        a ground-truth box of the pair. A flat map or a pair without ground truth is all ``False``.
    """
    if not (len(maps) == len(gt_boxes) == len(image_sizes)):
        raise ValueError(f"{len(maps)} maps, {len(gt_boxes)} gt box sets, {len(image_sizes)} sizes")
    ts = _thresholds(thresholds)
    deltas = np.asarray([float(d) for d in iou_thresholds], dtype=np.float64)
    table = np.zeros((len(maps), len(ts), len(deltas)), dtype=bool)
    for p, (cam, gt, size) in enumerate(zip(maps, gt_boxes, image_sizes, strict=True)):
        gt = torch.as_tensor(gt, dtype=torch.float32).reshape(-1, 4)
        size = (int(size[0]), int(size[1]))
        norm = normalize_map(upsample_map(torch.as_tensor(cam).float(), working_shape(size, working_size)), "minmax")
        if norm is None or len(gt) == 0:
            continue
        arr = norm.numpy()
        gt_np = gt.numpy()
        ascending = bool(np.all(np.diff(ts) > 0))
        for ti, t in enumerate(ts):
            boxes = _component_boxes_px(arr > t, size)
            if len(boxes) == 0:
                if ascending:  # the masks only shrink as the threshold rises
                    break
                continue
            table[p, ti] = _max_iou(boxes, gt_np) >= deltas
    return table


def max_box_acc_from_table(
    table: np.ndarray,
    *,
    thresholds: Sequence[float] | None = None,
    iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
) -> dict[str, Any]:
    """MaxBoxAccV2 of the pairs in ``table`` (``bool ndarray[P, T, D]`` from :func:`box_acc_table`
    with the same ``thresholds`` and ``iou_thresholds``); returns what :func:`max_box_acc_v2` does."""
    ts = _thresholds(thresholds)
    deltas = [float(d) for d in iou_thresholds]
    table = np.asarray(table, dtype=bool)
    if table.ndim != 3 or table.shape[1:] != (len(ts), len(deltas)):
        raise ValueError(f"table of shape {table.shape} does not match {len(ts)} thresholds x {len(deltas)} deltas")
    n = table.shape[0]
    if n == 0:
        nan = float("nan")
        return {"max_box_acc_v2": nan, "per_iou": {d: nan for d in deltas}, "best_threshold": {d: nan for d in deltas}, "n": 0}
    acc = table.mean(axis=0)
    best_idx = acc.argmax(axis=0)
    per_iou = {d: float(acc[best_idx[i], i]) for i, d in enumerate(deltas)}
    return {
        "max_box_acc_v2": float(np.mean(list(per_iou.values()))),
        "per_iou": per_iou,
        "best_threshold": {d: float(ts[best_idx[i]]) for i, d in enumerate(deltas)},
        "n": n,
    }


def max_box_acc_v2(
    maps: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    *,
    thresholds: Sequence[float] | None = None,
    iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    working_size: int = 224,
) -> dict[str, Any]:
    """MaxBoxAccV2 over (image, class) pairs.

    Args:
        maps: per pair a raw map ``Tensor[h, w]`` (any resolution; min-max normalised here).
        gt_boxes: per pair the ground-truth boxes of that class, ``Tensor[M, 4]`` xyxy pixels.
        image_sizes: per pair (width, height) of the image in pixels.
        thresholds: CAM thresholds in [0, 1) (default ``0.00, 0.01, ..., 0.99``); a pixel is on
            when its normalised value is ``> threshold``.
        iou_thresholds: the deltas averaged.
        working_size: longest side of the grid maps are upsampled to.

    Returns:
        ``{"max_box_acc_v2": mean over deltas, "per_iou": {delta: best accuracy},
        "best_threshold": {delta: threshold}, "n": pairs}``; values ``nan`` with no pairs.
    """
    table = box_acc_table(maps, gt_boxes, image_sizes, thresholds=thresholds, iou_thresholds=iou_thresholds,
                          working_size=working_size)
    return max_box_acc_from_table(table, thresholds=thresholds, iou_thresholds=iou_thresholds)


def coco_ap(
    predictions: Sequence[Any], ground_truth: Sequence[Any], *, num_classes: int | None = None, per_class: bool = False
) -> dict[str, Any]:
    """COCO AP@[.50:.95] and AP50 via pycocotools' ``COCOeval`` on in-memory dicts.

    Args:
        predictions: per image ``(boxes[N, 4], scores[N], labels[N])`` (all boxes are used).
        ground_truth: per image ``(boxes[M, 4], labels[M])``.
        num_classes: number of classes (default: largest label seen + 1). Category id = label + 1.
        per_class: also return ``"per_class": {label: {"AP", "AP50"}}`` for every label with a
            ground-truth box (from the same evaluation: COCOeval's per-category precision).

    Returns:
        ``{"AP": float, "AP50": float}``; ``None`` values when there is no ground-truth box;
        ``0.0`` when there are ground-truth boxes but no predictions.
    """

    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} ground-truth images")
    preds = [_pred(p) for p in predictions]
    gts = [_gt(g) for g in ground_truth]
    seen = [int(lab.max()) for _, _, lab in preds if len(lab)] + [int(lab.max()) for _, lab in gts if len(lab)]
    k = num_classes if num_classes is not None else (max(seen) + 1 if seen else 0)
    images, annotations, results = [], [], []
    ann_id = 1
    for i, ((gb, gl), (pb, ps, pl)) in enumerate(zip(gts, preds, strict=True)):
        image_id = i + 1
        extent = torch.cat([gb, pb])
        w = float(extent[:, 2].max()) if len(extent) else 1.0
        h = float(extent[:, 3].max()) if len(extent) else 1.0
        images.append({"id": image_id, "width": max(w, 1.0), "height": max(h, 1.0)})
        for box, lab in zip(gb.tolist(), gl.tolist(), strict=True):
            bw, bh = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": lab + 1, "bbox": [box[0], box[1], bw, bh],
                                "area": bw * bh, "iscrowd": 0})
            ann_id += 1
        for box, score, lab in zip(pb.tolist(), ps.tolist(), pl.tolist(), strict=True):
            results.append({"image_id": image_id, "category_id": lab + 1, "score": score,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    gt_labels = sorted({lab for _, gl in gts for lab in gl.tolist()})
    if not annotations:
        return {"AP": None, "AP50": None, **({"per_class": {}} if per_class else {})}
    if not results:
        zero = {"AP": 0.0, "AP50": 0.0}
        return {**zero, **({"per_class": {lab: dict(zero) for lab in gt_labels}} if per_class else {})}
    dataset = {"images": images, "annotations": annotations, "categories": [{"id": c + 1, "name": str(c)} for c in range(k)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt_coco = COCO()
        gt_coco.dataset = dataset
        gt_coco.createIndex()
        dt_coco = gt_coco.loadRes(results)
        ev = COCOeval(gt_coco, dt_coco, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ap, ap50 = float(ev.stats[0]), float(ev.stats[1])
    out: dict[str, Any] = {"AP": max(ap, 0.0), "AP50": max(ap50, 0.0)}
    if per_class:
        out["per_class"] = {lab: _category_ap(ev, lab + 1) for lab in gt_labels}
    return out


def _category_ap(ev: Any, category_id: int) -> dict[str, float]:
    """AP@[.50:.95] and AP50 of one category from an accumulated ``COCOeval`` (all areas, 100 dets).

    ``ev.eval["precision"]`` is ``[T iou thresholds, R recall points, K categories, A areas, M
    max-dets]`` with ``-1`` where a category has no ground truth."""
    k = list(ev.params.catIds).index(category_id)
    a = list(ev.params.areaRngLbl).index("all")
    m = list(ev.params.maxDets).index(max(ev.params.maxDets))
    prec = np.asarray(ev.eval["precision"])[:, :, k, a, m]
    at50 = prec[int(np.argmin(np.abs(np.asarray(ev.params.iouThrs) - 0.5)))]
    return {"AP": float(prec[prec > -1].mean()) if (prec > -1).any() else 0.0,
            "AP50": float(at50[at50 > -1].mean()) if (at50 > -1).any() else 0.0}


def box_correctness(
    predictions: Sequence[Any], ground_truth: Sequence[Any], *, iou_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every proposed box of a collection, labelled right or wrong.

    A box is *correct* when its IoU with some ground-truth box of its own class in its own image is
    at least ``iou_threshold`` (several boxes may be correct for one object: this judges the box,
    not the detector; :func:`coco_ap` is the one-to-one measure).

    Args:
        predictions: per image ``(boxes[N, 4], scores[N], labels[N])`` or an ``ImageResult``.
        ground_truth: per image ``(boxes[M, 4], labels[M])``.
        iou_threshold: IoU a box needs to count as correct.

    Returns:
        ``(scores float64[B], correct bool[B], labels int64[B])`` over all ``B`` proposed boxes,
        images in order, each image's boxes in its own order.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} ground-truth images")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    scores: list[np.ndarray] = []
    correct: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for p, g in zip(predictions, ground_truth, strict=True):
        pb, ps, pl = _pred(p)
        gb, gl = _gt(g)
        ok = np.zeros(len(pb), dtype=bool)
        if len(pb) and len(gb):
            iou = box_iou(pb, gb)  # [N, M]
            same = pl[:, None] == gl[None, :]
            ok = ((iou >= iou_threshold) & same).any(dim=1).numpy()
        scores.append(ps.double().numpy())
        correct.append(ok)
        labels.append(pl.numpy().astype(np.int64))
    if not scores:
        return np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    return np.concatenate(scores), np.concatenate(correct), np.concatenate(labels)


def _outcomes(scores: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    c = np.asarray(correct).reshape(-1)
    if len(s) != len(c):
        raise ValueError(f"{len(s)} scores for {len(c)} outcomes")
    if np.isnan(s).any():
        raise ValueError(f"scores contain {int(np.isnan(s).sum())} NaN values")
    if c.dtype != bool and not np.isin(c, (0, 1)).all():
        raise ValueError("outcomes must be booleans (or 0/1)")
    return s, c.astype(bool)


def auroc(scores: Any, correct: Any) -> float:
    """Area under the ROC curve of ``scores`` for the outcome ``correct`` (rank-based).

    The probability that a correct item outscores a wrong one, ties counting one half: the
    Mann-Whitney U statistic over ``n_correct * n_wrong``, from average ranks.

    Args:
        scores: ``float[B]`` (no NaN).
        correct: ``bool[B]`` (or 0/1).

    Returns:
        AUROC in [0, 1] (0.5: the score says nothing; 1: every correct item ranks above every
        wrong one); ``nan`` when there are no correct or no wrong items.
    """
    s, c = _outcomes(scores, correct)
    n_pos, n_neg = int(c.sum()), int((~c).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks for ties
    u = float(ranks[c].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def top_fraction_precision(scores: Any, correct: Any, fraction: float = 0.5) -> float:
    """Precision of the ``fraction`` of items with the highest scores.

    The top ``k = B * fraction`` items (a fractional ``k`` takes part of the boundary item); items
    tied at the boundary score share the remaining places evenly, so the result is the expected
    precision under a random order of ties and does not depend on the input order.

    Args:
        scores: ``float[B]`` (no NaN).
        correct: ``bool[B]`` (or 0/1).
        fraction: share of the items kept, in (0, 1]; ``1`` gives the overall precision.

    Returns:
        Precision in [0, 1]; ``nan`` with no items.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    s, c = _outcomes(scores, correct)
    if len(s) == 0:
        return float("nan")
    k = len(s) * fraction
    values, inverse = np.unique(-s, return_inverse=True)  # ascending -score = descending score
    sizes = np.bincount(inverse, minlength=len(values)).astype(np.float64)
    hits = np.bincount(inverse, weights=c.astype(np.float64), minlength=len(values))
    before = np.concatenate([[0.0], np.cumsum(sizes)[:-1]])
    taken = np.clip(k - before, 0.0, sizes)  # places each tie group gets among the top k
    return float((hits * taken / sizes).sum() / k)
