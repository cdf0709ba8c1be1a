"""Ground truth of the real raccoon-kangaroo photos: VOC import with the real-file quirks, and
an evaluation of a trivial centre-box baseline against the figure in the dataset's README."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from sqlalchemy import insert, select

from camcore import metrics as camcore_metrics
from camcore.images import ImageLoadError, load_image
from worker.evaluation import evaluate_collection
from worker.formats import import_ground_truth
from worker.store.models import Box, BoxSource, Category, Collection, Image, ImageStatus, ReviewStatus


@pytest.fixture(scope="module")
def photo_rows(shared_dataset: Path) -> list[dict]:
    """Image rows as the importer makes them: displayed size after EXIF, truncated files failed,
    files with the same content as an earlier one left out (``(collection, sha256)`` is unique)."""
    rows, seen = [], set()
    for path in sorted(shared_dataset.glob("*/images/*.jpg")):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        row = {"rel_path": path.relative_to(shared_dataset).as_posix(), "sha256": digest, "status": ImageStatus.ok}
        try:
            image = load_image(data)
            if image.info.get("camlabel_truncated"):
                raise ImageLoadError("truncated image file")
            row["width"], row["height"] = image.size
        except ImageLoadError as exc:
            row.update(status=ImageStatus.failed, failure_reason=str(exc))
        rows.append(row)
    return rows


def _collection(runtime, rows: list[dict]) -> tuple[int, dict[str, int], dict[str, int]]:  # type: ignore[no-untyped-def]
    with runtime.sessions() as session:
        collection = Collection(name="raccoon-kangaroo")
        session.add(collection)
        session.flush()
        session.execute(insert(Image), [{**r, "collection_id": collection.id} for r in rows])
        session.commit()
        ids = dict(session.execute(select(Image.rel_path, Image.id).where(Image.collection_id == collection.id)).all())
        return collection.id, ids, {}


def test_voc_ground_truth_of_the_real_photos(runtime, photo_rows: list[dict], shared_dataset: Path) -> None:
    collection_id, ids, _ = _collection(runtime, photo_rows)
    failed = [r["rel_path"] for r in photo_rows if r["status"] == ImageStatus.failed]
    assert failed == ["kangaroo/images/00090.jpg"]
    assert len(photo_rows) == 359  # 364 files, 5 are byte-identical copies of others

    with runtime.sessions() as session:
        report = import_ground_truth(session, collection_id, shared_dataset, "voc")
        session.commit()
    assert report.files == 364
    assert report.images_matched == 358
    assert report.categories_created == ["kangaroo", "raccoon"] or report.categories_created == ["raccoon", "kangaroo"]
    reasons = {e.file: e.reason for e in report.errors}
    assert "failed to import" in reasons["kangaroo/annotations/00090.xml"]
    # the copies (e.g. raccoon-83.jpg == raccoon-120.jpg) are stored once: matched by content, and
    # the second xml naming the same bytes is reported (never two sets of ground truth on one image)
    kept = {r["rel_path"] for r in photo_rows}
    copies = [p.relative_to(shared_dataset).as_posix() for p in shared_dataset.glob("*/images/*.jpg") if p.relative_to(shared_dataset).as_posix() not in kept]
    assert len(copies) == 5
    for rel in copies:
        xml = rel.replace("/images/", "/annotations/").replace(".jpg", ".xml")
        if xml in reasons:
            assert "has the same bytes as" in reasons[xml] and "already has ground truth" in reasons[xml]
        else:  # the copy's xml came first and claimed the image: the original's xml is the one reported
            assert any(f"already has ground truth from {xml}" in reason for reason in reasons.values()), reasons
    assert len(report.errors) == 6 and report.files_failed == 6
    # kangaroo files carry a foreign <path> with another file name: matched by location and <filename>
    with runtime.sessions() as session:
        boxes = session.execute(
            select(Image.rel_path, Category.name, Box.x1, Box.y1, Box.x2, Box.y2)
            .join(Image, Box.image_id == Image.id).join(Category, Box.category_id == Category.id)
            .where(Box.source == BoxSource.ground_truth)
        ).all()
    by_image: dict[str, list] = {}
    for rel, name, *coords in boxes:
        by_image.setdefault(rel, []).append((name, coords))
    assert sorted(by_image["kangaroo/images/00001.jpg"]) == [("kangaroo", [134, 105, 341, 253]), ("kangaroo", [233, 89, 386, 262])]
    assert by_image["raccoon/images/raccoon-1.jpg"] == [("raccoon", [81, 88, 522, 408])]
    assert all(name == rel.split("/")[0] for rel, items in by_image.items() for name, _c in items)
    assert report.boxes_imported == len(boxes) > 470


def test_centre_box_baseline_on_the_real_photos(sqlite_runtime, photo_rows: list[dict], shared_dataset: Path) -> None:
    """The README measures CorLoc 0.52 for a centre box covering 80% of width and height."""
    runtime = sqlite_runtime
    collection_id, ids, _ = _collection(runtime, photo_rows)
    with runtime.sessions() as session:
        import_ground_truth(session, collection_id, shared_dataset, "voc")
        cats = dict(session.execute(select(Category.name, Category.id).where(Category.collection_id == collection_id)).all())
        centre = []
        for r in photo_rows:
            if r["status"] == ImageStatus.ok:
                w, h = r["width"], r["height"]
                centre.append({"image_id": ids[r["rel_path"]], "category_id": cats[r["rel_path"].split("/")[0]], "x1": 0.1 * w, "y1": 0.1 * h,
                               "x2": 0.9 * w, "y2": 0.9 * h, "score": 0.5, "source": BoxSource.cam, "status": ReviewStatus.proposed, "version": 1})
        session.execute(insert(Box), centre)
        result = evaluate_collection(session, collection_id, box_status="all")
        gt_rows = session.execute(select(Box.image_id, Box.category_id, Box.x1, Box.y1, Box.x2, Box.y2).where(Box.source == BoxSource.ground_truth)).all()
        session.commit()
    assert result["counts"]["images_with_gt"] == 358 and result["counts"]["pairs"] == 358
    assert abs(result["corloc"] - 0.52) < 0.04
    # the same value from camcore's implementation over the same boxes
    gts: dict[int, list] = {}
    for image_id, category_id, *coords in gt_rows:
        gts.setdefault(image_id, []).append((coords, category_id))
    preds = {b["image_id"]: b for b in centre}
    order = sorted(gts)
    p = [(torch.tensor([[preds[i]["x1"], preds[i]["y1"], preds[i]["x2"], preds[i]["y2"]]]), torch.tensor([0.5]),
          torch.tensor([preds[i]["category_id"]])) for i in order]
    g = [(torch.tensor([c for c, _ in gts[i]]), torch.tensor([k for _, k in gts[i]])) for i in order]
    assert result["corloc"] == pytest.approx(camcore_metrics.corloc(p, g), abs=1e-6)
    assert 0 < result["ap50"] < 1
