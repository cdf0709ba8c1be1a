"""Evaluate a collection's boxes against its imported ground truth.

Metrics (images with at least one ground-truth box only; an image without ground truth says
nothing about whether its proposals are right):

- ``corloc``: CorLoc@0.5 / GT-known Loc: share of (image, ground-truth class) pairs whose
  top-scoring predicted box of that class has IoU >= 0.5 with a ground-truth box of that class;
- ``ap50`` / ``ap``: COCO box AP at IoU 0.5 and averaged over 0.5:0.95 (pycocotools);
- ``max_box_acc_v2``: MaxBoxAccV2 (Choe et al. 2020) from the stored concept maps of the model
  version, when maps and camcore's metric are available, else ``None`` with a reason.

Each run is stored as an :class:`Evaluation` row per model version.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session
from torchvision.ops import box_iou

from worker.formats.selection import (
    IMAGE_OK,
    FormatError,
    box_filter,
    category_map,
    image_filter,
    load_collection,
    stream,
)
from worker.store.blobs import LocalBlobStore
from worker.store.models import Box, ConceptMap, Evaluation
from worker.store.models import Image as ImageRow

IOU_THRESHOLD = 0.5
# "reviewed": the boxes a person accepted, edited or drew, scored on the reviewed images only
EVAL_BOX_STATUSES = ("all", "accepted", "reviewed")

Boxes = dict[tuple[int, int], list[tuple[float, float, float, float]]]  # (image id, category id) -> xyxy pixel boxes
# (image id, category id, x1, y1, x2, y2, score, model version id): a predicted box, xyxy pixels
Prediction = tuple[int, int, float, float, float, float, float, int | None]


def _selection(box_status: str) -> str:
    return "accepted" if box_status == "reviewed" else box_status


def _load_ground_truth(session: Session, collection_id: int, *, reviewed_only: bool = False) -> tuple[Boxes, dict[int, tuple[int, int]]]:
    gt: Boxes = defaultdict(list)
    sizes: dict[int, tuple[int, int]] = {}
    stmt = (
        select(Box.image_id, Box.category_id, Box.x1, Box.y1, Box.x2, Box.y2, ImageRow.width, ImageRow.height)
        .join(ImageRow, Box.image_id == ImageRow.id)
        .where(image_filter(collection_id, reviewed_only=reviewed_only), box_filter("ground_truth"))
        .order_by(Box.id)
    )
    for image_id, category_id, x1, y1, x2, y2, width, height in stream(session, stmt):
        gt[(image_id, category_id)].append((x1, y1, x2, y2))
        sizes[image_id] = (int(width or 0), int(height or 0))
    return gt, sizes


def _load_predictions(session: Session, collection_id: int, box_status: str, model_version_id: int | None) -> list[Prediction]:
    """``(image id, category id, x1, y1, x2, y2, score, model version id)`` of the selected boxes."""
    stmt = (
        select(Box.image_id, Box.category_id, Box.x1, Box.y1, Box.x2, Box.y2, Box.score, Box.model_version_id)
        .join(ImageRow, Box.image_id == ImageRow.id)
        .where(ImageRow.collection_id == collection_id, IMAGE_OK, box_filter(_selection(box_status)))
        .order_by(Box.id)
    )
    if model_version_id is not None:
        stmt = stmt.where(Box.model_version_id == model_version_id)
    return [(r[0], r[1], r[2], r[3], r[4], r[5], 1.0 if r[6] is None else float(r[6]), r[7]) for r in stream(session, stmt)]


def corloc(gt: Boxes, predictions: list[Prediction], *, iou_threshold: float = IOU_THRESHOLD) -> tuple[float | None, dict[int, float], int]:
    """CorLoc over (image, class) pairs of ``gt``; returns ``(overall, per category id, pairs)``."""
    top: dict[tuple[int, int], tuple[float, tuple[float, float, float, float]]] = {}
    for image_id, category_id, x1, y1, x2, y2, score, _mv in predictions:
        key = (image_id, category_id)
        if key in gt and (key not in top or score > top[key][0]):
            top[key] = (score, (x1, y1, x2, y2))
    hits: dict[int, list[int]] = defaultdict(list)
    for key, boxes in gt.items():
        hit = 0
        if key in top:
            iou = box_iou(torch.tensor([top[key][1]], dtype=torch.float64), torch.tensor(boxes, dtype=torch.float64))
            hit = int(bool((iou >= iou_threshold).any()))
        hits[key[1]].append(hit)
    pairs = sum(len(v) for v in hits.values())
    if not pairs:
        return None, {}, 0
    overall = sum(sum(v) for v in hits.values()) / pairs
    return overall, {cid: sum(v) / len(v) for cid, v in hits.items()}, pairs


def coco_ap(gt: Boxes, sizes: dict[int, tuple[int, int]], predictions: list[Prediction]) -> tuple[float | None, float | None, dict[int, float]]:
    """``(AP, AP50, per category id AP50)`` of predictions on the images with ground truth (pycocotools)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not gt:
        return None, None, {}
    annotations: list[dict[str, Any]] = []
    for (image_id, category_id), boxes in gt.items():
        for x1, y1, x2, y2 in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    category_ids = sorted({cid for _iid, cid in gt})
    dataset = {"images": [{"id": i, "width": w, "height": h} for i, (w, h) in sizes.items()],
               "categories": [{"id": c, "name": str(c)} for c in category_ids], "annotations": annotations}
    dets = [(i, x1, y1, x2 - x1, y2 - y1, s, c) for i, c, x1, y1, x2, y2, s, _mv in predictions if i in sizes and c in category_ids and x2 > x1 and y2 > y1]
    if not dets:
        return 0.0, 0.0, {c: 0.0 for c in category_ids}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(np.asarray(dets, dtype=np.float64))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.imgIds = sorted(sizes)
        evaluator.params.catIds = category_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]; T[0] is IoU 0.5, A[0] all areas, M[-1] 100 dets
    per_class: dict[int, float] = {}
    for k, cid in enumerate(category_ids):
        p = precision[0, :, k, 0, -1]
        p = p[p > -1]
        per_class[cid] = float(p.mean()) if p.size else 0.0
    return max(0.0, float(evaluator.stats[0])), max(0.0, float(evaluator.stats[1])), per_class


def _max_box_acc_v2(session: Session, blobs: LocalBlobStore | None, collection_id: int, model_version_id: int | None, gt: Boxes,
                    sizes: dict[int, tuple[int, int]]) -> tuple[dict[str, Any] | None, str | None]:
    """MaxBoxAccV2 of the (image, class) pairs with ground truth and a stored concept map of
    ``model_version_id`` (``camcore.metrics.max_box_acc_v2``): ``({"value", "per_iou",
    "best_threshold", "pairs"}, None)``, or ``(None, reason)`` when it cannot be computed."""
    if model_version_id is None:
        return None, "no model version to take concept maps from"
    if blobs is None:
        return None, "no blob store given to read concept maps"
    try:
        from camcore.concept_maps import decode_map
        from camcore.metrics import max_box_acc_v2
    except ImportError as exc:
        return None, f"camcore metrics unavailable: {exc}"
    stmt = (
        select(ConceptMap.image_id, ConceptMap.category_id, ConceptMap.raw_key)
        .join(ImageRow, ConceptMap.image_id == ImageRow.id)
        .where(ImageRow.collection_id == collection_id, ConceptMap.model_version_id == model_version_id)
        .order_by(ConceptMap.id)
    )
    maps, gt_boxes, image_sizes = [], [], []
    for image_id, category_id, raw_key in stream(session, stmt):
        boxes = gt.get((image_id, category_id))
        if not boxes or not blobs.exists(raw_key):
            continue
        maps.append(decode_map(blobs.read_bytes(raw_key)))
        gt_boxes.append(torch.tensor(boxes, dtype=torch.float32))
        image_sizes.append(sizes[image_id])
    if not maps:
        return None, "no concept maps stored for the images with ground truth"
    result = max_box_acc_v2(maps, gt_boxes, image_sizes)
    return {
        "value": _finite(result["max_box_acc_v2"]),
        "per_iou": {str(k): _finite(v) for k, v in result["per_iou"].items()},
        "best_threshold": {str(k): _finite(v) for k, v in result["best_threshold"].items()},
        "pairs": int(result["n"]),
    }, None


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def compute_metrics(session: Session, blobs: LocalBlobStore | None, collection_id: int, box_status: str, model_version_id: int | None,
                    gt: Boxes, sizes: dict[int, tuple[int, int]], names: dict[int, str]) -> dict[str, Any]:
    """Metrics of one set of predictions (see the module docstring) as a JSON-serialisable dict."""
    all_predictions = _load_predictions(session, collection_id, box_status, model_version_id)
    predictions = [p for p in all_predictions if p[0] in sizes]
    loc, loc_per_class, pairs = corloc(gt, predictions)
    ap, ap50, ap50_per_class = coco_ap(gt, sizes, predictions)
    mba, mba_reason = _max_box_acc_v2(session, blobs, collection_id, model_version_id, gt, sizes)
    per_class = {
        names.get(cid, str(cid)): {"corloc": _finite(loc_per_class.get(cid)), "ap50": _finite(ap50_per_class.get(cid)),
                                   "gt_boxes": sum(len(b) for (_i, c), b in gt.items() if c == cid)}
        for cid in sorted({c for _i, c in gt})
    }
    out: dict[str, Any] = {
        "box_status": box_status,
        "model_version_id": model_version_id,
        "corloc": _finite(loc),
        "ap50": _finite(ap50),
        "ap": _finite(ap),
        "max_box_acc_v2": mba["value"] if mba else None,
        "max_box_acc_v2_detail": mba,
        "iou_threshold": IOU_THRESHOLD,
        "counts": {
            "images_with_gt": len(sizes),
            "gt_boxes": sum(len(b) for b in gt.values()),
            "pairs": pairs,
            "pred_boxes": len(predictions),
            "pred_boxes_outside_gt_images": len(all_predictions) - len(predictions),
        },
        "per_class": per_class,
    }
    if mba_reason:
        out["max_box_acc_v2_note"] = mba_reason
    return out


def evaluate_collection(
    session: Session,
    collection_id: int,
    *,
    box_status: str = "all",
    model_version_id: int | None = None,
    blobs: LocalBlobStore | None = None,
    job_id: int | None = None,
    store: bool = True,
) -> dict[str, Any]:
    """Evaluate the collection's ``box_status`` boxes against its ground truth: ``all`` (every
    proposal that is not rejected), ``accepted`` (boxes a person accepted, edited or drew) or
    ``reviewed`` (those same boxes, scored on the reviewed images only: how good the labels a
    person checked are, without counting the images nobody looked at as misses).

    With ``model_version_id`` only that version's boxes count. Without it all selected boxes
    count together, and when they come from several model versions each version is also
    evaluated on its own (``by_model_version``). One :class:`Evaluation` row is added per
    evaluated set (flushed, not committed). Raises :class:`FormatError` when the collection is
    missing, the status unknown, or there is no ground truth.
    """
    if box_status not in EVAL_BOX_STATUSES:
        raise FormatError(f"unknown box status {box_status!r}; expected one of {EVAL_BOX_STATUSES}")
    load_collection(session, collection_id)
    categories = category_map(session, collection_id)
    names = dict(zip(categories.ids, categories.names, strict=True))
    gt, sizes = _load_ground_truth(session, collection_id, reviewed_only=box_status == "reviewed")
    if not gt:
        if box_status == "reviewed":
            raise FormatError("no reviewed image has ground-truth boxes; review some of the images with ground truth first")
        raise FormatError("the collection has no ground-truth boxes; import some with 'camlabel gt import'")
    if model_version_id is None:
        versions_stmt = (
            select(Box.model_version_id)
            .join(ImageRow, Box.image_id == ImageRow.id)
            .where(ImageRow.collection_id == collection_id, IMAGE_OK, box_filter(_selection(box_status)), Box.model_version_id.is_not(None))
            .distinct()
        )
        versions = sorted(v for (v,) in session.execute(versions_stmt).all() if v is not None)  # NULLs are filtered out above
    else:
        versions = [model_version_id]
    main_version = model_version_id if model_version_id is not None else (versions[0] if len(versions) == 1 else None)
    result = compute_metrics(session, blobs, collection_id, box_status, model_version_id, gt, sizes, names)
    result["model_version_id"] = main_version
    if main_version is not None and result["max_box_acc_v2"] is None and model_version_id is None:
        mba, reason = _max_box_acc_v2(session, blobs, collection_id, main_version, gt, sizes)
        result["max_box_acc_v2"] = mba["value"] if mba else None
        result["max_box_acc_v2_detail"] = mba
        if reason:
            result["max_box_acc_v2_note"] = reason
        else:
            result.pop("max_box_acc_v2_note", None)
    rows: list[Evaluation] = []
    if model_version_id is None and len(versions) > 1:
        result["by_model_version"] = {}
        for version in versions:
            metrics = compute_metrics(session, blobs, collection_id, box_status, version, gt, sizes, names)
            result["by_model_version"][str(version)] = metrics
            rows.append(Evaluation(collection_id=collection_id, model_version_id=version, job_id=job_id, box_status=box_status, metrics=metrics))
    rows.insert(0, Evaluation(collection_id=collection_id, model_version_id=main_version, job_id=job_id, box_status=box_status, metrics=dict(result)))
    if store:
        session.add_all(rows)
        session.flush()
        result["evaluation_id"] = rows[0].id
    return result
