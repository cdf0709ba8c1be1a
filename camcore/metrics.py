"""Localisation metrics against ground-truth boxes (all boxes xyxy float pixels of the image).

Inputs, per image ``i``:

- predictions: ``(boxes[N, 4], scores[N], labels[N])`` -- or any object with ``.boxes``,
  ``.scores``, ``.labels`` (e.g. :class:`camcore.pipeline.ImageResult`);
- ground truth: ``(boxes[M, 4], labels[M])`` -- or an object with ``.boxes``, ``.labels``.

Labels are class indices (ints). Functions:

- :func:`corloc` -- CorLoc / GT-known Loc: share of (image, present class) pairs whose top-scoring
  box of that class has IoU >= 0.5 with some ground-truth box of that class (no box = miss).
- :func:`max_box_acc_v2` -- MaxBoxAccV2 (Choe et al., CVPR 2020) from maps: for each CAM threshold,
  boxes of all connected components; a pair is correct if the best IoU of any of its boxes with any
  ground-truth box reaches delta; best threshold per delta; averaged over delta in {0.3, 0.5, 0.7}.
- :func:`coco_ap` -- COCO AP (IoU .50:.95) and AP50 of all scored boxes via pycocotools.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torchvision.ops import box_iou

from camcore.boxes import normalize_map, upsample_map, working_shape

__all__ = ["coco_ap", "corloc", "max_box_acc_v2"]

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
    for p, g in zip(predictions, ground_truth):
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


def _component_boxes_px(mask: np.ndarray, image_size: tuple[int, int]) -> Tensor:
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if count == 0:
        return torch.zeros((0, 4))
    gh, gw = mask.shape
    w, h = image_size
    objs = ndimage.find_objects(labels)
    arr = np.array([[s[1].start * w / gw, s[0].start * h / gh, s[1].stop * w / gw, s[0].stop * h / gh] for s in objs if s is not None])
    return torch.from_numpy(arr.astype(np.float32))


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
    if not (len(maps) == len(gt_boxes) == len(image_sizes)):
        raise ValueError(f"{len(maps)} maps, {len(gt_boxes)} gt box sets, {len(image_sizes)} sizes")
    ts = np.asarray(thresholds if thresholds is not None else np.arange(0.0, 1.0, 0.01), dtype=np.float64)
    deltas = [float(d) for d in iou_thresholds]
    correct = np.zeros((len(ts), len(deltas)), dtype=np.int64)
    n = len(maps)
    for cam, gt, size in zip(maps, gt_boxes, image_sizes):
        gt = torch.as_tensor(gt, dtype=torch.float32).reshape(-1, 4)
        size = (int(size[0]), int(size[1]))
        norm = normalize_map(upsample_map(torch.as_tensor(cam).float(), working_shape(size, working_size)), "minmax")
        if norm is None or len(gt) == 0:
            continue
        arr = norm.numpy()
        for ti, t in enumerate(ts):
            boxes = _component_boxes_px(arr > t, size)
            if len(boxes) == 0:
                continue
            best = float(box_iou(boxes, gt).max())
            for di, d in enumerate(deltas):
                if best >= d:
                    correct[ti, di] += 1
    if n == 0:
        nan = float("nan")
        return {"max_box_acc_v2": nan, "per_iou": {d: nan for d in deltas}, "best_threshold": {d: nan for d in deltas}, "n": 0}
    acc = correct / n
    best_idx = acc.argmax(axis=0)
    per_iou = {d: float(acc[best_idx[i], i]) for i, d in enumerate(deltas)}
    return {
        "max_box_acc_v2": float(np.mean(list(per_iou.values()))),
        "per_iou": per_iou,
        "best_threshold": {d: float(ts[best_idx[i]]) for i, d in enumerate(deltas)},
        "n": n,
    }


def coco_ap(predictions: Sequence[Any], ground_truth: Sequence[Any], *, num_classes: int | None = None) -> dict[str, float | None]:
    """COCO AP@[.50:.95] and AP50 via pycocotools' ``COCOeval`` on in-memory dicts.

    Args:
        predictions: per image ``(boxes[N, 4], scores[N], labels[N])`` (all boxes are used).
        ground_truth: per image ``(boxes[M, 4], labels[M])``.
        num_classes: number of classes (default: largest label seen + 1). Category id = label + 1.

    Returns:
        ``{"AP": float, "AP50": float}``; ``None`` values when there is no ground-truth box;
        ``0.0`` when there are ground-truth boxes but no predictions.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} ground-truth images")
    preds = [_pred(p) for p in predictions]
    gts = [_gt(g) for g in ground_truth]
    seen = [int(lab.max()) for _, _, lab in preds if len(lab)] + [int(lab.max()) for _, lab in gts if len(lab)]
    k = num_classes if num_classes is not None else (max(seen) + 1 if seen else 0)
    images, annotations, results = [], [], []
    ann_id = 1
    for i, ((gb, gl), (pb, ps, pl)) in enumerate(zip(gts, preds)):
        image_id = i + 1
        extent = torch.cat([gb, pb])
        w = float(extent[:, 2].max()) if len(extent) else 1.0
        h = float(extent[:, 3].max()) if len(extent) else 1.0
        images.append({"id": image_id, "width": max(w, 1.0), "height": max(h, 1.0)})
        for box, lab in zip(gb.tolist(), gl.tolist()):
            bw, bh = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": lab + 1, "bbox": [box[0], box[1], bw, bh],
                                "area": bw * bh, "iscrowd": 0})
            ann_id += 1
        for box, score, lab in zip(pb.tolist(), ps.tolist(), pl.tolist()):
            results.append({"image_id": image_id, "category_id": lab + 1, "score": score,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    if not annotations:
        return {"AP": None, "AP50": None}
    if not results:
        return {"AP": 0.0, "AP50": 0.0}
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
    return {"AP": max(ap, 0.0), "AP50": max(ap50, 0.0)}
