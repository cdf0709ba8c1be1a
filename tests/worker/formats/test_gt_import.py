"""Ground-truth imports (COCO, VOC, YOLO): matching, replacing, and per-file errors for bad input."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from worker.formats import FormatError, import_ground_truth
from worker.store.models import Box, BoxSource, Category

if TYPE_CHECKING:
    from tests.worker.formats.scene import Built, Factory

IMAGES = [("set/images/a.jpg", 100, 80), ("set/images/b.jpg", 60, 60), ("other/b.jpg", 60, 60), ("set/images/c.jpg", 50, 40)]


def voc(filename: str, boxes: list[tuple[str, float, float, float, float]], *, width: int = 100, height: int = 80,
        path: str | None = None, folder: str = "images") -> str:
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in boxes
    )
    path_el = f"<path>{path}</path>" if path else ""
    size = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
    return f"<annotation><folder>{folder}</folder><filename>{filename}</filename>{path_el}{size}{objects}</annotation>"


def gt_boxes(runtime, built: Built) -> dict[str, list[tuple[str, float, float, float, float]]]:  # type: ignore[no-untyped-def]
    by_id = {v: k for k, v in built.image_ids.items()}
    with runtime.sessions() as session:
        rows = session.execute(
            select(Box.image_id, Category.name, Box.x1, Box.y1, Box.x2, Box.y2)
            .join(Category, Box.category_id == Category.id)
            .where(Box.source == BoxSource.ground_truth)
            .order_by(Box.id)
        ).all()
    out: dict[str, list] = {}
    for image_id, name, *coords in rows:
        if image_id in by_id:
            out.setdefault(by_id[image_id], []).append((name, *coords))
    return out


def run_import(runtime, built: Built, path: Path, fmt: str):  # type: ignore[no-untyped-def]
    with runtime.sessions() as session:
        report = import_ground_truth(session, built.collection_id, path, fmt)
        session.commit()
    return report


def test_voc_folder_import_matches_reports_and_clips(runtime, factory: Factory, tmp_path: Path) -> None:
    built = factory.collection("voc", ["thing"], IMAGES)
    ann = tmp_path / "gt" / "set" / "annotations"
    ann.mkdir(parents=True)
    # matched via its folder (set/annotations -> set/images); a box 5 px beyond the right edge is clipped
    (ann / "a.xml").write_text(voc("a.jpg", [("thing", 10, 10, 50, 40), ("thing", 60, 20, 105, 70)], path="C:\\Users\\someone\\photos\\a.jpg"))
    # width 0 in the file: the image's stored size is used, with a warning
    (ann / "c.xml").write_text(voc("c.jpg", [("newclass", 5, 5, 20, 20)], width=0, height=0))
    # no such image anywhere
    (ann / "missing.xml").write_text(voc("missing.jpg", [("thing", 1, 1, 5, 5)]))
    # box wholly outside the image and a degenerate one: both rejected, the good box kept
    (tmp_path / "gt" / "set" / "annotations" / "b.xml").write_text(
        voc("b.jpg", [("thing", 70, 70, 90, 90), ("thing", 10, 10, 10, 30), ("thing", 1, 2, 30, 40)], width=60, height=60))
    (ann / "broken.xml").write_text("<annotation><filename>a.jpg</annot")
    report = run_import(runtime, built, tmp_path / "gt", "voc")

    assert report.images_matched == 3
    assert report.boxes_imported == 4
    assert report.boxes_rejected == 2
    assert report.boxes_clipped == 1
    assert report.categories_created == ["newclass"]
    errors = {(e.file, e.reason) for e in report.errors}
    assert any(f == "set/annotations/missing.xml" and "no image in the collection matches" in r for f, r in errors)
    assert any(f == "set/annotations/broken.xml" and "not readable XML" in r for f, r in errors)
    assert any(f == "set/annotations/b.xml" and "outside the image (60x60)" in r for f, r in errors)
    assert any(f == "set/annotations/b.xml" and "degenerate" in r for f, r in errors)
    warnings = {(w.file, w.reason) for w in report.warnings}
    assert any(f == "set/annotations/c.xml" and "0x0" in r and "50x40" in r for f, r in warnings)
    assert any(f == "set/annotations/a.xml" and "clipped" in r for f, r in warnings)
    assert report.files_failed == 2 and report.files == 5

    boxes = gt_boxes(runtime, built)
    assert boxes["set/images/a.jpg"] == [("thing", 10, 10, 50, 40), ("thing", 60, 20, 100, 70)]
    assert boxes["set/images/b.jpg"] == [("thing", 1, 2, 30, 40)]  # not other/b.jpg: the folder decides
    assert boxes["set/images/c.jpg"] == [("newclass", 5, 5, 20, 20)]
    assert "other/b.jpg" not in boxes


def test_reimport_replaces_instead_of_duplicating(runtime, factory: Factory, tmp_path: Path) -> None:
    built = factory.collection("re", ["thing"], IMAGES)
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "a.xml").write_text(voc("a.jpg", [("thing", 10, 10, 50, 40)]))
    run_import(runtime, built, folder, "voc")
    (folder / "a.xml").write_text(voc("a.jpg", [("thing", 11, 12, 51, 42), ("thing", 0, 0, 9, 9)]))
    report = run_import(runtime, built, folder, "voc")
    assert report.boxes_replaced == 1 and report.boxes_imported == 2
    assert gt_boxes(runtime, built) == {"set/images/a.jpg": [("thing", 11, 12, 51, 42), ("thing", 0, 0, 9, 9)]}


def test_ambiguous_file_name_is_reported(runtime, factory: Factory, tmp_path: Path) -> None:
    built = factory.collection("amb", ["thing"], IMAGES)
    folder = tmp_path / "flat"
    folder.mkdir()
    (folder / "b.xml").write_text(voc("b.jpg", [("thing", 1, 1, 20, 20)], width=60, height=60))
    (folder / "a.xml").write_text(voc("a.jpg", [("thing", 1, 1, 20, 20)]))
    report = run_import(runtime, built, folder, "voc")
    assert report.images_matched == 1
    [error] = report.errors
    assert error.file == "b.xml" and "ambiguous" in error.reason and "other/b.jpg" in error.reason and "set/images/b.jpg" in error.reason


def test_failed_image_is_reported_not_imported(runtime, factory: Factory, tmp_path: Path) -> None:
    built = factory.collection("fail", ["thing"], IMAGES, failed={"set/images/c.jpg": "image file is truncated"})
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "c.xml").write_text(voc("c.jpg", [("thing", 1, 1, 20, 20)]))
    report = run_import(runtime, built, folder, "voc")
    assert not report.ok
    assert "failed to import (image file is truncated)" in report.errors[0].reason


def test_coco_import_by_path_then_file_name(runtime, factory: Factory, tmp_path: Path) -> None:
    built = factory.collection("coco", ["thing"], IMAGES)
    data = {
        "images": [
            {"id": 7, "file_name": "set/images/a.jpg", "width": 100, "height": 80},
            {"id": 8, "file_name": "/elsewhere/c.jpg", "width": 50, "height": 40},
            {"id": 9, "file_name": "nothere.jpg", "width": 10, "height": 10},
        ],
        "categories": [{"id": 3, "name": "thing"}, {"id": 4, "name": "other"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 30]},
            {"id": 2, "image_id": 8, "category_id": 4, "bbox": [1, 1, 10, 10]},
            {"id": 3, "image_id": 8, "category_id": 99, "bbox": [1, 1, 10, 10]},
            {"id": 4, "image_id": 9, "category_id": 3, "bbox": [1, 1, 5, 5]},
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    report = run_import(runtime, built, path, "coco")
    assert report.images_matched == 2 and report.boxes_imported == 2
    assert report.categories_created == ["other"]
    reasons = [(e.file, e.reason) for e in report.errors]
    assert ("nothere.jpg", "no image in the collection matches 'nothere.jpg'") in reasons
    assert any("category id 99" in r for _f, r in reasons)
    assert gt_boxes(runtime, built) == {"set/images/a.jpg": [("thing", 10, 10, 30, 40)], "set/images/c.jpg": [("other", 1, 1, 11, 11)]}


def test_yolo_import_with_names_and_bad_lines(runtime, factory: Factory, tmp_path: Path) -> None:
    built = factory.collection("yolo", ["thing"], IMAGES)
    root = tmp_path / "yolo"
    (root / "labels" / "set").mkdir(parents=True)
    (root / "data.yaml").write_text("names:\n  0: thing\n  1: other\n")
    # a.jpg is 100x80: centre (0.3, 0.5), size 0.2 x 0.25 -> [20, 30, 40, 50]
    (root / "labels" / "set" / "a.txt").write_text("0 0.3 0.5 0.2 0.25\n1 0.5 0.5 0.1 0.1\nbad line here\n0 1.5 1.5 0.1 0.1\n")
    (root / "labels" / "set" / "zzz.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with zipfile.ZipFile(tmp_path / "yolo.zip", "w") as archive:
        for file in root.rglob("*"):
            if file.is_file():
                archive.write(file, file.relative_to(root).as_posix())
    for source in (root, tmp_path / "yolo.zip"):
        report = run_import(runtime, built, source, "yolo")
        assert report.images_matched == 1 and report.boxes_imported == 2 and report.boxes_rejected == 2
        assert any(e.file == "labels/set/zzz.txt" and "no image" in e.reason for e in report.errors)
        assert any("line 3: not numbers" in e.reason for e in report.errors)
        assert any("outside the image" in e.reason for e in report.errors)
        [(name, *coords), (name2, *coords2)] = gt_boxes(runtime, built)["set/images/a.jpg"]
        assert name == "thing" and coords == pytest.approx([20, 30, 40, 50])
        assert name2 == "other" and coords2 == pytest.approx([45, 36, 55, 44])


def test_bad_arguments(runtime, factory: Factory, tmp_path: Path) -> None:
    built = factory.collection("args", ["thing"], IMAGES)
    with runtime.sessions() as session:
        with pytest.raises(FormatError, match="unknown ground-truth format 'csv'"):
            import_ground_truth(session, built.collection_id, tmp_path, "csv")
        with pytest.raises(FormatError, match="no such file or folder"):
            import_ground_truth(session, built.collection_id, tmp_path / "nope", "voc")
        assert session.scalar(select(func.count()).select_from(Box)) == 0


def test_voc_filename_without_extension_matches_by_stem(runtime, factory: Factory, tmp_path: Path) -> None:
    built = factory.collection("stem", ["thing"], IMAGES)
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "x.xml").write_text(voc("c", [("thing", 1, 1, 20, 20)], width=50, height=40))
    report = run_import(runtime, built, folder, "voc")
    assert report.errors == [] and report.images_matched == 1
    assert gt_boxes(runtime, built) == {"set/images/c.jpg": [("thing", 1, 1, 20, 20)]}
