"""evaluate_collection: CorLoc@0.5, AP50/AP, MaxBoxAccV2, per model version, on both databases."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from sqlalchemy import select

from camcore import metrics as camcore_metrics
from camcore.concept_maps import encode_map
from worker.evaluation import evaluate_collection
from worker.formats import FormatError, export_collection
from worker.store.models import BoxSource, ConceptMap, Evaluation, ModelVersion, ReviewStatus

if TYPE_CHECKING:
    from tests.worker.formats.scene import Built, Factory

CAM, GT = BoxSource.cam, BoxSource.ground_truth
IMAGES = [("i/1.jpg", 100, 80), ("i/2.jpg", 100, 100), ("i/3.jpg", 80, 80), ("i/no-gt.jpg", 40, 40)]
GT_BOXES = [
    ("i/1.jpg", "cat", (0, 0, 50, 50)),
    ("i/2.jpg", "cat", (10, 10, 40, 40)),
    ("i/2.jpg", "dog", (50, 50, 90, 90)),
    ("i/3.jpg", "dog", (0, 0, 30, 30)),
    ("i/3.jpg", "dog", (40, 40, 70, 70)),
]
PREDICTIONS = [  # (image, class, box, score, status)
    ("i/1.jpg", "cat", (0, 0, 50, 50), 0.9, ReviewStatus.accepted),  # hit
    ("i/2.jpg", "cat", (60, 60, 80, 80), 0.8, ReviewStatus.proposed),  # top cat box of i/2: miss
    ("i/2.jpg", "cat", (10, 10, 40, 40), 0.3, ReviewStatus.proposed),  # right, but not the top one
    ("i/3.jpg", "dog", (40, 42, 70, 70), 0.7, ReviewStatus.proposed),  # IoU 0.93 with the 2nd dog: hit
    ("i/no-gt.jpg", "dog", (1, 1, 20, 20), 0.99, ReviewStatus.proposed),  # no ground truth: not counted
]  # the dog of i/2 has no box at all: miss -> CorLoc 2/4


def _model_version(runtime, name: str) -> int:  # type: ignore[no-untyped-def]
    with runtime.sessions() as session:
        mv = ModelVersion(name=name, arch="efficientnet_lite0", spec={"arch": "efficientnet_lite0"}, class_names=["cat", "dog"])
        session.add(mv)
        session.commit()
        return mv.id


@pytest.fixture
def evalset(runtime, factory: Factory) -> tuple[Built, int]:  # type: ignore[no-untyped-def]
    built = factory.collection("eval", ["cat", "dog"], IMAGES)
    mv = _model_version(runtime, "v1")
    factory.boxes(built, [(rel, cat, box, 1.0, GT, ReviewStatus.accepted) for rel, cat, box in GT_BOXES])
    factory.boxes(built, [(rel, cat, box, score, CAM, status) for rel, cat, box, score, status in PREDICTIONS], model_version_id=mv)
    return built, mv


def _evaluate(runtime, built: Built, **kw) -> dict:  # type: ignore[no-untyped-def]
    with runtime.sessions() as session:
        result = evaluate_collection(session, built.collection_id, blobs=runtime.blobs, **kw)
        session.commit()
    return result


def test_corloc_ap_counts_and_stored_row(runtime, evalset: tuple[Built, int]) -> None:
    built, mv = evalset
    result = _evaluate(runtime, built)
    assert result["corloc"] == pytest.approx(0.5)
    assert result["per_class"]["cat"]["corloc"] == pytest.approx(0.5) and result["per_class"]["dog"]["corloc"] == pytest.approx(0.5)
    assert result["counts"] == {"images_with_gt": 3, "gt_boxes": 5, "pairs": 4, "pred_boxes": 4, "pred_boxes_outside_gt_images": 1}
    assert result["model_version_id"] == mv
    assert 0 < result["ap50"] < 1 and 0 < result["ap"] <= result["ap50"]
    assert result["max_box_acc_v2"] is None and "no concept maps" in result["max_box_acc_v2_note"]

    # the same figures as camcore's reference implementations on the same boxes
    order = ["i/1.jpg", "i/2.jpg", "i/3.jpg"]
    label = {"cat": 0, "dog": 1}
    preds = [(torch.tensor([b for r, _c, b, _s, _st in PREDICTIONS if r == rel], dtype=torch.float32).reshape(-1, 4),
              torch.tensor([s for r, _c, _b, s, _st in PREDICTIONS if r == rel]),
              torch.tensor([label[c] for r, c, _b, _s, _st in PREDICTIONS if r == rel], dtype=torch.long)) for rel in order]
    gts = [(torch.tensor([b for r, _c, b in GT_BOXES if r == rel], dtype=torch.float32),
            torch.tensor([label[c] for r, c, _b in GT_BOXES if r == rel], dtype=torch.long)) for rel in order]
    assert result["corloc"] == pytest.approx(camcore_metrics.corloc(preds, gts))
    ref = camcore_metrics.coco_ap(preds, gts, num_classes=2)
    assert result["ap50"] == pytest.approx(ref["AP50"], abs=1e-6) and result["ap"] == pytest.approx(ref["AP"], abs=1e-6)

    with runtime.sessions() as session:
        [row] = session.scalars(select(Evaluation).where(Evaluation.collection_id == built.collection_id)).all()
        assert row.model_version_id == mv and row.box_status == "all" and row.metrics["corloc"] == pytest.approx(0.5)
        assert row.id == result["evaluation_id"]


def test_ap_matches_cocoeval_on_the_exported_files(runtime, evalset: tuple[Built, int], tmp_path: Path) -> None:
    built, _mv = evalset
    result = _evaluate(runtime, built, store=False)
    with runtime.sessions() as session:
        export_collection(session, runtime.blobs, built.collection_id, "coco", tmp_path / "gt.json", source="ground_truth")
        export_collection(session, runtime.blobs, built.collection_id, "coco-results", tmp_path / "res.json", status="all", include_unreviewed=True)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "gt.json"))
        dt = gt.loadRes(str(tmp_path / "res.json"))
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.imgIds = sorted({a["image_id"] for a in gt.dataset["annotations"]})
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert result["ap"] == pytest.approx(evaluator.stats[0], abs=1e-6)
    assert result["ap50"] == pytest.approx(evaluator.stats[1], abs=1e-6)


def test_accepted_only_and_per_model_version(runtime, factory: Factory, evalset: tuple[Built, int]) -> None:
    built, mv = evalset
    accepted = _evaluate(runtime, built, box_status="accepted")
    assert accepted["corloc"] == pytest.approx(0.25) and accepted["counts"]["pred_boxes"] == 1 and accepted["box_status"] == "accepted"

    mv2 = _model_version(runtime, "v2")
    factory.boxes(built, [("i/2.jpg", "dog", (50, 50, 90, 90), 0.5, CAM, ReviewStatus.proposed)], model_version_id=mv2)
    both = _evaluate(runtime, built)
    assert both["model_version_id"] is None and both["corloc"] == pytest.approx(0.75)
    assert both["by_model_version"][str(mv)]["corloc"] == pytest.approx(0.5)
    assert both["by_model_version"][str(mv2)]["corloc"] == pytest.approx(0.25)
    only2 = _evaluate(runtime, built, model_version_id=mv2)
    assert only2["corloc"] == pytest.approx(0.25) and only2["counts"]["pred_boxes"] == 1
    with runtime.sessions() as session:
        rows = session.execute(select(Evaluation.model_version_id, Evaluation.box_status).order_by(Evaluation.id)).all()
    assert rows == [(mv, "accepted"), (None, "all"), (mv, "all"), (mv2, "all"), (mv2, "all")]


def test_max_box_acc_v2_from_stored_concept_maps(runtime, evalset: tuple[Built, int]) -> None:
    built, mv = evalset
    # a 10x10 map per (image, ground-truth class) that is hot exactly over one ground-truth box
    pairs = {("i/1.jpg", "cat"): (0, 0, 50, 50), ("i/2.jpg", "cat"): (10, 10, 40, 40),
             ("i/2.jpg", "dog"): (50, 50, 90, 90), ("i/3.jpg", "dog"): (40, 40, 70, 70)}
    sizes = dict((rel, (w, h)) for rel, w, h in IMAGES)
    maps, gts, image_sizes = [], [], []
    with runtime.sessions() as session:
        for (rel, cat), (x1, y1, x2, y2) in pairs.items():
            w, h = sizes[rel]
            cam = torch.zeros(10, 10)
            cam[round(y1 / h * 10):round(y2 / h * 10), round(x1 / w * 10):round(x2 / w * 10)] = 1.0
            key = runtime.blobs.put_bytes(encode_map(cam), kind="maps", suffix=".npy")
            session.add(ConceptMap(image_id=built.image_ids[rel], category_id=built.category_ids[cat], model_version_id=mv, raw_key=key))
            maps.append(cam)
            gts.append(torch.tensor([b for r, c, b in GT_BOXES if r == rel and c == cat], dtype=torch.float32))
            image_sizes.append(sizes[rel])
        session.commit()
    result = _evaluate(runtime, built)
    reference = camcore_metrics.max_box_acc_v2(maps, gts, image_sizes)
    assert result["max_box_acc_v2"] == pytest.approx(reference["max_box_acc_v2"], abs=1e-6)
    assert result["max_box_acc_v2"] > 0.9
    assert result["max_box_acc_v2_detail"]["pairs"] == 4
    assert "max_box_acc_v2_note" not in result
    assert not math.isnan(result["max_box_acc_v2"])


def test_no_ground_truth_is_a_clear_error(runtime, factory: Factory) -> None:
    built = factory.collection("nogt", ["cat"], IMAGES[:1])
    with runtime.sessions() as session:
        with pytest.raises(FormatError, match="no ground-truth boxes"):
            evaluate_collection(session, built.collection_id)
        with pytest.raises(FormatError, match="unknown box status 'some'"):
            evaluate_collection(session, built.collection_id, box_status="some")


def test_reviewed_boxes_are_scored_on_the_reviewed_images_only(runtime, evalset: tuple[Built, int]) -> None:
    """i/1 is reviewed (its box accepted): the accepted boxes score CorLoc 1/1 there, while
    "accepted" over every image with ground truth counts the unreviewed i/2 and i/3 as misses."""
    built, _mv = evalset
    reviewed = _evaluate(runtime, built, box_status="reviewed")
    assert reviewed["box_status"] == "reviewed" and reviewed["corloc"] == pytest.approx(1.0)
    assert reviewed["counts"]["images_with_gt"] == 1 and reviewed["counts"]["pred_boxes"] == 1
    assert set(reviewed["per_class"]) == {"cat"} and reviewed["per_class"]["cat"]["ap50"] == pytest.approx(1.0)
    assert _evaluate(runtime, built, box_status="accepted")["corloc"] == pytest.approx(0.25)


def test_reviewed_without_reviewed_ground_truth_images_is_a_clear_error(runtime, factory: Factory) -> None:
    built = factory.collection("unreviewed-gt", ["cat"], [("a.jpg", 40, 40)])
    factory.boxes(built, [("a.jpg", "cat", (1, 1, 20, 20), 1.0, GT, ReviewStatus.accepted)])
    with runtime.sessions() as session, pytest.raises(FormatError, match="no reviewed image has ground-truth boxes"):
        evaluate_collection(session, built.collection_id, box_status="reviewed")
