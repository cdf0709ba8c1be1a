"""Round trips: export -> import as ground truth into a fresh collection -> evaluate / compare."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from sqlalchemy import select

from worker.evaluation import evaluate_collection
from worker.formats import export_collection, import_ground_truth
from worker.store.models import Box, BoxSource, Category, ReviewStatus

if TYPE_CHECKING:
    from tests.worker.formats.scene import Built, Factory

from tests.worker.formats.scene import IMAGES


def _boxes_of(runtime, built: Built, source_filter) -> dict[str, list[tuple[str, float, float, float, float]]]:  # type: ignore[no-untyped-def]
    by_id = {v: k for k, v in built.image_ids.items()}
    with runtime.sessions() as session:
        rows = session.execute(
            select(Box.image_id, Category.name, Box.x1, Box.y1, Box.x2, Box.y2)
            .join(Category, Box.category_id == Category.id)
            .where(Box.image_id.in_(list(by_id)), source_filter)
            .order_by(Box.image_id, Box.x1, Box.y1)
        ).all()
    out: dict[str, list] = {}
    for image_id, name, *coords in rows:
        out.setdefault(by_id[image_id], []).append((name, *coords))
    return out


def _accepted(runtime, built: Built):  # type: ignore[no-untyped-def]
    """The scene's accepted boxes, clipped inside their image as every export clips them."""
    boxes = _boxes_of(runtime, built, Box.status.in_([ReviewStatus.accepted, ReviewStatus.edited]) & (Box.source != BoxSource.ground_truth))
    sizes = dict(built.sizes)
    return {rel: sorted((n, max(0, a), max(0, b), min(sizes[rel][0], c), min(sizes[rel][1], d)) for n, a, b, c, d in bs) for rel, bs in boxes.items()}


def _import(runtime, built: Built, path: Path, fmt: str):  # type: ignore[no-untyped-def]
    with runtime.sessions() as session:
        report = import_ground_truth(session, built.collection_id, path, fmt)
        session.commit()
    return report


def test_coco_export_imported_as_ground_truth_then_evaluated_gives_ap_1(runtime, factory: Factory, scene: Built, tmp_path: Path) -> None:
    out = tmp_path / "accepted.json"
    with runtime.sessions() as session:
        export_collection(session, runtime.blobs, scene.collection_id, "coco", out)
    exported = json.loads(out.read_text())

    # a fresh collection of the same images, whose proposals are the exported boxes
    fresh = factory.collection("fresh", ["cat", "dog"], IMAGES[:-1], seed=0)
    names = {c["id"]: c["name"] for c in exported["categories"]}
    files = {img["id"]: img["file_name"] for img in exported["images"]}
    rng = random.Random(1)
    factory.boxes(fresh, [
        (files[a["image_id"]], names[a["category_id"]], (a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]),
         rng.random(), BoxSource.cam, ReviewStatus.proposed)
        for a in exported["annotations"]
    ])

    report = _import(runtime, fresh, out, "coco")
    assert report.errors == [] and report.images_matched == 4 and report.boxes_imported == 4  # the reviewed images
    with runtime.sessions() as session:
        metrics = evaluate_collection(session, fresh.collection_id, box_status="all")
        session.commit()
    assert metrics["ap"] == pytest.approx(1.0)
    assert metrics["ap50"] == pytest.approx(1.0)
    assert metrics["corloc"] == pytest.approx(1.0)
    assert metrics["counts"]["gt_boxes"] == 4 and metrics["counts"]["pred_boxes"] == 4


def test_ground_truth_export_round_trips_into_a_fresh_collection(runtime, factory: Factory, scene: Built, tmp_path: Path) -> None:
    out = tmp_path / "gt.json"
    with runtime.sessions() as session:
        export_collection(session, runtime.blobs, scene.collection_id, "coco", out, source="ground_truth")
    fresh = factory.collection("fresh-gt", [], IMAGES[:-1])
    report = _import(runtime, fresh, out, "coco")
    assert report.categories_created == ["dog"] and report.boxes_imported == 1
    assert _boxes_of(runtime, fresh, Box.source == BoxSource.ground_truth) == {"dogs/images/d2.jpg": [("dog", 1.0, 1.0, 39.0, 39.0)]}


@pytest.mark.parametrize("fmt", ["yolo", "voc"])
@pytest.mark.parametrize("suffix", ["", ".zip"])
def test_yolo_and_voc_round_trips_keep_boxes_within_a_pixel(runtime, factory: Factory, scene: Built, tmp_path: Path, fmt: str, suffix: str) -> None:
    out = tmp_path / f"export-{fmt}{suffix}"
    with runtime.sessions() as session:
        summary = export_collection(session, runtime.blobs, scene.collection_id, fmt, out)
    assert summary["images"] == 4 and summary["annotations"] == 4 and summary["image_files"] == 4  # d2 is unreviewed

    if suffix:
        with zipfile.ZipFile(out) as archive:
            names = set(archive.namelist())
    else:
        names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    if fmt == "yolo":
        assert {"data.yaml", "images/cats__images__c1.jpg", "labels/cats__images__c1.txt", "labels/dogs__images__empty.txt"} <= names
        data = yaml.safe_load(zipfile.ZipFile(out).read("data.yaml") if suffix else (out / "data.yaml").read_bytes())
        assert data["names"] == {0: "cat", 1: "dog"}
    else:
        assert {"Annotations/cats__images__c1.xml", "JPEGImages/cats__images__c1.jpg", "Annotations/dogs__images__empty.xml"} <= names

    fresh = factory.collection(f"fresh-{fmt}", ["cat", "dog"], IMAGES[:-1])
    report = _import(runtime, fresh, out, fmt)
    assert report.errors == [], report.errors
    assert report.images_matched == 4 and report.boxes_imported == 4
    got = _boxes_of(runtime, fresh, Box.source == BoxSource.ground_truth)
    want = _accepted(runtime, scene)
    assert set(got) == set(want)
    for rel, boxes in want.items():
        assert len(got[rel]) == len(boxes)
        for (gn, *gc), (wn, *wc) in zip(sorted(got[rel]), boxes, strict=True):
            assert gn == wn
            assert max(abs(g - w) for g, w in zip(gc, wc, strict=True)) <= 1.0


def test_yolo_export_images_are_the_stored_files(runtime, scene: Built, tmp_path: Path) -> None:
    out = tmp_path / "y"
    with runtime.sessions() as session:
        export_collection(session, runtime.blobs, scene.collection_id, "yolo", out, status="all")
        from worker.store.models import Image

        key = session.scalar(select(Image.storage_key).where(Image.id == scene.image_ids["cats/images/c1.jpg"]))
    assert (out / "images" / "cats__images__c1.jpg").read_bytes() == runtime.blobs.read_bytes(key)
    lines = (out / "labels" / "cats__images__c1.txt").read_text().splitlines()
    assert len(lines) == 2  # accepted + proposed under status=all
    cls, cx, cy, w, h = lines[0].split()
    # c1 is 64x48, box [4, 5, 40, 30]
    assert cls == "0" and float(cx) == pytest.approx(22 / 64, abs=1e-5)
    assert float(w) == pytest.approx(36 / 64, abs=1e-5) and float(h) == pytest.approx(25 / 48, abs=1e-5)
    assert (out / "labels" / "dogs__images__empty.txt").read_text() == ""
