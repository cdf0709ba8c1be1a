"""COCO detection and results exports, checked with pycocotools on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

if TYPE_CHECKING:
    from tests.worker.formats.scene import Built, Factory
from worker.formats import FormatError, export_collection


def _export(runtime, built: Built, tmp_path: Path, fmt: str = "coco", name: str = "out.json", **kw) -> tuple[dict, Path]:  # type: ignore[no-untyped-def]
    out = tmp_path / name
    with runtime.sessions() as session:
        summary = export_collection(session, runtime.blobs, built.collection_id, fmt, out, **kw)
    return summary, out


def _quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_coco_export_loads_in_pycocotools_and_follows_the_rules(runtime, scene: Built, tmp_path: Path) -> None:
    summary, out = _export(runtime, scene, tmp_path)
    coco = _quiet_coco(out)
    data = json.loads(out.read_text())

    # every reviewed usable image, also the one marked "no objects"; the failed one and the
    # unreviewed d2 are left out
    files = {img["file_name"] for img in data["images"]}
    assert files == {"cats/images/c1.jpg", "cats/images/c2.jpg", "dogs/images/d1.jpg", "dogs/images/empty.jpg"}
    sizes = {img["file_name"]: (img["width"], img["height"]) for img in data["images"]}
    assert sizes["dogs/images/d1.jpg"] == (50, 70)
    assert summary["images"] == 4 and summary["include_unreviewed"] is False

    # accepted = accepted + edited + human: 4 boxes; proposed, rejected and ground truth are not exported
    assert summary["annotations"] == len(data["annotations"]) == 4
    assert [c["id"] for c in data["categories"]] == [1, 2]
    assert [c["name"] for c in data["categories"]] == ["cat", "dog"]
    ids = [a["id"] for a in data["annotations"]]
    assert len(set(ids)) == len(ids) and all(i > 0 for i in ids)
    by_image = {img["id"]: img for img in data["images"]}
    for ann in data["annotations"]:
        img = by_image[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= img["width"] and y + h <= img["height"]
        assert ann["area"] == pytest.approx(w * h, abs=0.01)
        assert ann["iscrowd"] == 0 and isinstance(ann["iscrowd"], int)
        assert 0 < ann["score"] <= 1
        assert ann["source"] != "ground_truth"
    clipped = [a for a in data["annotations"] if a["score"] == pytest.approx(0.6)]
    assert clipped[0]["bbox"] == [0.0, 10.0, 50.0, 60.0]
    human = [a for a in data["annotations"] if a["source"] == "human"]
    assert human[0]["score"] == 1.0  # a human box without a score still carries one
    assert set(data["info"]) == {"description", "version", "year", "date_created", "contributor", "url", "model_version_id", "model_version_ids"}

    # COCOeval runs against it (scored against itself: every box matches)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(data["annotations"])
        evaluator = COCOeval(coco, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[1] == pytest.approx(1.0)


def test_status_all_adds_proposed_but_never_rejected_or_ground_truth(runtime, scene: Built, tmp_path: Path) -> None:
    summary, out = _export(runtime, scene, tmp_path, status="all", include_unreviewed=True)
    data = json.loads(out.read_text())
    assert summary["annotations"] == 6
    assert {a["status"] for a in data["annotations"]} == {"accepted", "edited", "proposed"}
    assert all(a["source"] in ("cam", "human") for a in data["annotations"])


def test_ground_truth_export_holds_only_ground_truth(runtime, scene: Built, tmp_path: Path) -> None:
    summary, out = _export(runtime, scene, tmp_path, source="ground_truth")
    data = json.loads(out.read_text())
    assert summary["annotations"] == 1 and summary["source"] == "ground_truth"
    assert data["annotations"][0]["bbox"] == [1.0, 1.0, 38.0, 38.0]
    assert len(data["images"]) == 5


def test_category_ids_stay_stable_when_a_category_is_added(runtime, factory: Factory, scene: Built, tmp_path: Path) -> None:
    _s, first = _export(runtime, scene, tmp_path, name="first.json")
    factory.add_category(scene, "aardvark")  # sorts first by name, but gets the next id
    _s, second = _export(runtime, scene, tmp_path, name="second.json")
    one, two = json.loads(first.read_text()), json.loads(second.read_text())
    assert {c["name"]: c["id"] for c in one["categories"]} == {"cat": 1, "dog": 2}
    assert {c["name"]: c["id"] for c in two["categories"]} == {"cat": 1, "dog": 2, "aardvark": 3}
    assert [(a["id"], a["category_id"]) for a in one["annotations"]] == [(a["id"], a["category_id"]) for a in two["annotations"]]


def test_results_export_is_accepted_by_loadres_against_the_ground_truth_export(runtime, scene: Built, tmp_path: Path) -> None:
    _s, gt_path = _export(runtime, scene, tmp_path, name="gt.json", source="ground_truth")
    summary, res_path = _export(runtime, scene, tmp_path, fmt="coco-results", name="res.json", status="all", include_unreviewed=True)
    results = json.loads(res_path.read_text())
    assert isinstance(results, list) and len(results) == summary["annotations"] == 6
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    gt = _quiet_coco(gt_path)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(str(res_path))
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # d2 has one GT dog [1,1,39,39]; the proposed dog [2,2,30,30] has IoU 784/1444 = 0.54 -> AP50 counts it
    assert len(dt.getAnnIds()) == 6
    assert evaluator.stats[1] > 0


def test_bad_requests_raise_clear_errors(runtime, scene: Built, tmp_path: Path) -> None:
    with runtime.sessions() as session:
        with pytest.raises(FormatError, match="unknown export format 'csv'"):
            export_collection(session, runtime.blobs, scene.collection_id, "csv", tmp_path / "x")
        with pytest.raises(FormatError, match="unknown box status 'maybe'"):
            export_collection(session, runtime.blobs, scene.collection_id, "coco", tmp_path / "x.json", status="maybe")
        with pytest.raises(FormatError, match="no collection with id 999"):
            export_collection(session, runtime.blobs, 999, "coco", tmp_path / "x.json")


def test_info_is_small_and_names_the_model_version(runtime, factory: Factory, tmp_path: Path) -> None:
    from worker.store.models import BoxSource, ModelVersion, ReviewStatus

    built = factory.collection("info", ["cat"], [("a.jpg", 40, 30)])
    with runtime.sessions() as session:  # a spec as large as a trained model's (objectness vectors)
        spec = {"arch": "efficientnet_lite0", "input_size": 384, "extra": {"objectness": {"mean": [0.123456789] * 1280}}}
        mv = ModelVersion(name="cats-v1", arch="efficientnet_lite0", spec=spec, class_names=["cat"], calibration={"cat": {"threshold": 0.3}})
        session.add(mv)
        session.commit()
        mv_id = mv.id
    factory.boxes(built, [("a.jpg", "cat", (1, 1, 20, 20), 0.8, BoxSource.cam, ReviewStatus.accepted)], model_version_id=mv_id)
    summary, out = _export(runtime, built, tmp_path)
    info = json.loads(out.read_text())["info"]
    assert summary["model_versions"] == [mv_id]
    assert info["model_version_id"] == mv_id and info["model_version_ids"] == [mv_id]
    assert info["description"].startswith("camlabel export of collection info") and info["version"]
    assert info["date_created"].startswith(str(info["year"]))
    assert len(json.dumps(info)) < 400  # was 14.7 KB with the model's vectors
