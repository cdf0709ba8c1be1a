"""The CLI contract in embedded mode (SQLite, no Redis): jobs run in-process."""

from __future__ import annotations

import json
import re
from pathlib import Path


def test_collections_create_and_list(run) -> None:  # type: ignore[no-untyped-def]
    assert "created collection" in run("collections", "create", "birds").output
    duplicate = run("collections", "create", "birds", code=1)
    assert "already exists" in duplicate.output
    listed = json.loads(run("collections", "list", "--json").output)
    assert listed == [{"id": listed[0]["id"], "name": "birds", "images": 0}]


def test_clear_errors_with_exit_1(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert "no collection named 'nope'" in run("import", "nope", str(tmp_path), code=1).output
    run("collections", "create", "c")
    assert "does not exist" in run("import", "c", str(tmp_path / "missing"), code=1).output
    (tmp_path / "file.txt").write_text("x")
    assert "neither a folder nor a .zip" in run("import", "c", str(tmp_path / "file.txt"), code=1).output
    assert "job 999 does not exist" in run("jobs", "cancel", "999", code=1).output
    assert "REDIS_URL is not set" in run("worker", code=1).output
    assert "model_version_id must be" in run("infer", "c", "--model", "resnet!", code=1).output


def test_import_train_infer_export_in_process(run, photos: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (photos / "raccoon" / "README.txt").write_text("not an image")
    run("collections", "create", "rk")
    imported = run("import", "rk", str(photos))
    assert "imported 8, duplicates 0, failed 0, non-image files skipped 1" in imported.output
    trained = run("train", "rk", "--arch", "tiny_cnn", "--input-size", "96", "--epochs", "10", "--wait")
    assert "model version" in trained.output
    inferred = run("infer", "rk", "--wait")
    found = re.search(r"8 images, (\d+) boxes, 0 failed", inferred.output)
    assert found, inferred.output
    n_boxes = int(found.group(1))
    assert n_boxes >= 8  # at least one box per tagged image
    out = tmp_path / "out" / "coco.json"
    reviewed_only = run("export", "rk", "--format", "coco", "--status", "all", "-o", str(out))
    assert "(0 images, 0 annotations; reviewed images only)" in reviewed_only.output  # nobody reviewed anything yet
    run("export", "rk", "--format", "coco", "--status", "all", "--include-unreviewed", "-o", str(out))
    coco = json.loads(out.read_text())
    assert len(coco["images"]) == 8 and len(coco["annotations"]) == n_boxes
    yolo = tmp_path / "yolo"
    run("export", "rk", "--format", "yolo", "--status", "all", "--include-unreviewed", "--val-fraction", "0.25", "--seed", "1", "-o", str(yolo))
    assert (yolo / "data.yaml").is_file() and len(list((yolo / "labels").rglob("*.txt"))) == 8
    assert len(list((yolo / "labels" / "val").glob("*.txt"))) == 2
    assert "is for yolo and voc" in run("export", "rk", "--format", "coco", "--val-fraction", "0.5", "-o", str(out), code=1).output

    jobs = json.loads(run("jobs", "rk", "--json").output)
    assert [j["kind"] for j in jobs] == ["import", "train", "infer", "export", "export", "export"]
    for job in jobs:
        assert set(job) == {"id", "kind", "status", "done", "total", "error"}
        assert job["status"] == "succeeded" and job["error"] is None and job["done"] == job["total"] > 0
    # cancelling a finished job changes nothing
    assert f"job {jobs[0]['id']}: succeeded" in run("jobs", "cancel", str(jobs[0]["id"])).output


def test_wait_exits_nonzero_when_the_job_fails(run, photos: Path) -> None:  # type: ignore[no-untyped-def]
    run("collections", "create", "empty")
    failed_train = run("train", "empty", "--arch", "tiny_cnn", "--wait", code=1)
    assert "failed" in failed_train.output and "no tagged images" in failed_train.output
    run("collections", "create", "rk")
    run("import", "rk", str(photos))
    failed_infer = run("infer", "rk", "--model", "999", "--wait", code=1)
    assert "model version 999 does not exist" in failed_infer.output
    jobs = json.loads(run("jobs", "rk", "--json").output)
    assert jobs[-1]["kind"] == "infer" and jobs[-1]["status"] == "failed"
    assert jobs[-1]["error"] == "model version 999 does not exist"
    untrained = run("infer", "rk", "--wait", code=1)
    assert "no model has been trained on this collection" in untrained.output
