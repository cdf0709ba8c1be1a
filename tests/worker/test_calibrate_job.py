"""The calibrate job: per-class parameters from reviewed boxes, proposals recomputed from stored maps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from sqlalchemy import func, select
from torchvision.ops import box_iou

from camcore.boxes import BoxParams, boxes_from_maps
from camcore.boxes.correction import corrections_from_extra
from camcore.concept_maps import decode_map
from camcore.models import ModelSpec
from camcore.threshold_choice import model_box_params
from tests.prerequisites import dev_dataset
from worker.store.models import Box, BoxSource, Category, ConceptMap, Image, Job, ModelVersion, ReviewStatus

pytestmark = pytest.mark.slow  # trains a model and runs the camlabel CLI in processes


@pytest.fixture
def run(sqlite_runtime):  # type: ignore[no-untyped-def]
    """``camlabel`` in its own process against the migrated SQLite runtime, as users run it (no
    Celery app, worker thread or watchdog of another test's app in the same process)."""
    settings = sqlite_runtime.settings
    env = {**os.environ, "DATABASE_URL": settings.database_url, "CAMLABEL_DATA_DIR": str(settings.data_dir),
           "CAMLABEL_CHUNK_SIZE": "3", "CAMLABEL_DEVICE": "cpu"}
    env.pop("REDIS_URL", None)
    root = Path(__file__).resolve().parents[2]

    def invoke(*args: str, code: int = 0) -> SimpleNamespace:
        done = subprocess.run([sys.executable, "-c", "from web.cli import main; main()", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=1500)
        output = done.stdout + done.stderr
        assert done.returncode == code, f"camlabel {' '.join(args)} -> {done.returncode}\n{output}"
        return SimpleNamespace(output=output, exit_code=done.returncode)

    return invoke


def _trained_and_inferred(run, photos: Path) -> None:  # type: ignore[no-untyped-def]
    run("collections", "create", "rk")
    run("import", "rk", str(photos))
    run("train", "rk", "--arch", "tiny_cnn", "--input-size", "96", "--epochs", "10", "--wait")
    run("infer", "rk", "--wait")


def test_calibrate_needs_reviewed_boxes(run, photos: Path) -> None:  # type: ignore[no-untyped-def]
    _trained_and_inferred(run, photos)
    failed = run("calibrate", "rk", "--wait", code=1)
    assert "no reviewed boxes to learn from" in failed.output


def _ground_truth_on_every_proposal(session) -> int:  # type: ignore[no-untyped-def]
    """Ground-truth boxes (as the GT import stores them: source ground_truth, status accepted)
    at exactly the place of every proposal; returns how many."""
    proposals = session.scalars(select(Box).where(Box.source == BoxSource.cam)).all()
    for b in proposals:
        session.add(Box(image_id=b.image_id, category_id=b.category_id, x1=b.x1, y1=b.y1, x2=b.x2, y2=b.y2, score=1.0,
                        source=BoxSource.ground_truth, status=ReviewStatus.accepted, version=1))
    session.commit()
    return len(proposals)


def test_no_ground_truth_reaches_calibration_or_inference(run, photos: Path, sqlite_runtime) -> None:  # type: ignore[no-untyped-def]
    """Ground truth is for scoring only: with ground truth on every image and nothing reviewed the
    calibrate job has nothing to learn from, and re-running infer proposes exactly the same boxes
    (ground truth neither trains, calibrates nor suppresses proposals)."""
    _trained_and_inferred(run, photos)

    def proposals() -> list[tuple]:
        with sqlite_runtime.sessions() as session:
            return sorted(session.execute(select(Box.image_id, Box.category_id, Box.x1, Box.y1, Box.x2, Box.y2, Box.score)
                                          .where(Box.source == BoxSource.cam)).all())

    before = proposals()
    with sqlite_runtime.sessions() as session:
        assert _ground_truth_on_every_proposal(session) == len(before) > 0
    failed = run("calibrate", "rk", "--wait", code=1)
    assert "no reviewed boxes to learn from" in failed.output
    with sqlite_runtime.sessions() as session:
        assert session.scalars(select(ModelVersion)).one().calibration in (None, {})
    run("infer", "rk", "--wait")
    assert proposals() == before


def test_calibrate_stores_params_and_recomputes_only_unreviewed_proposals(run, photos: Path, sqlite_runtime) -> None:  # type: ignore[no-untyped-def]
    _trained_and_inferred(run, photos)
    with sqlite_runtime.sessions() as session:
        proposals = session.scalars(select(Box).where(Box.source == BoxSource.cam).order_by(Box.image_id, Box.id)).all()
        by_image: dict[int, Box] = {}
        for box in proposals:
            by_image.setdefault(box.image_id, box)
        reviewed = list(by_image.values())[:4]
        for n, box in enumerate(reviewed):  # two accepted as proposed, two corrected by hand
            box.status = ReviewStatus.accepted if n % 2 == 0 else ReviewStatus.edited
            if n % 2:
                box.x1, box.y1 = box.x1 + 2, box.y1 + 2
        session.commit()
        before = {b.id: (b.x1, b.y1, b.x2, b.y2, b.status) for b in reviewed}
        reviewed_images = {b.image_id for b in reviewed}

    with sqlite_runtime.sessions() as session:
        proposals_before = sorted(session.execute(select(Box.id, Box.x1, Box.y1, Box.x2, Box.y2, Box.score)).all())
    preview = run("calibrate", "rk", "--preview")  # says what would be learned; changes nothing
    assert "Preview, nothing applied yet: learned from 4 reviewed images" in preview.output
    assert "Estimated (leave-one-out)" in preview.output and "recomputed" not in preview.output
    with sqlite_runtime.sessions() as session:
        assert sorted(session.execute(select(Box.id, Box.x1, Box.y1, Box.x2, Box.y2, Box.score)).all()) == proposals_before
        assert session.scalars(select(ModelVersion)).one().calibration in (None, {})

    out = run("calibrate", "rk", "--wait")
    assert "from 4 reviewed images" in out.output
    jobs = json.loads(run("jobs", "rk", "--json").output)
    assert jobs[-1]["kind"] == "calibrate" and jobs[-1]["status"] == "succeeded" and jobs[-1]["done"] == jobs[-1]["total"] == 8
    assert "learned from 4 reviewed images" in out.output  # the summary the dashboard shows

    def state() -> tuple[dict, list, int]:
        with sqlite_runtime.sessions() as session:
            version = session.scalars(select(ModelVersion)).one()
            kept = {b.id: (b.x1, b.y1, b.x2, b.y2, b.status) for b in session.scalars(select(Box).where(Box.id.in_(before)))}
            per_pair = session.execute(
                select(Box.image_id, Box.category_id, func.count()).where(Box.status == ReviewStatus.proposed)
                .group_by(Box.image_id, Box.category_id)
            ).all()
            total = session.scalar(select(func.count()).select_from(Box).where(Box.status == ReviewStatus.proposed))
            assert kept == before, "reviewed boxes must never change"
            return version.calibration, per_pair, total

    calibration, per_pair, total = state()
    report = calibration["extra"]["calibration"]
    classes = {k: v for k, v in report.items() if k.isdigit()}
    assert classes and all(entry["images"] >= 1 for entry in classes.values())
    assert report["collection"]["pairs"] >= 4 and report["box_scorer"]["fitted_on"] >= 4  # the collection rule, the refitted score
    stored = BoxParams.from_dict(calibration)  # what later infer jobs read
    corrections = corrections_from_extra(stored.extra)
    assert set(corrections) <= {int(c) for c in classes}
    assert all(entry["correction"]["images"] <= entry["images"] for entry in classes.values())
    # no new proposal where a reviewer already acted on that class
    assert not [pair for pair in per_pair if pair[0] in reviewed_images]
    assert total > 0

    run("calibrate", "rk", "--wait")  # idempotent: a re-run replaces, never duplicates
    _calibration, _per_pair, total_again = state()
    assert total_again == total



@pytest.mark.timeout(1800)  # imports, trains on and infers all 363 photos in processes
def test_the_train_job_chooses_the_collections_box_threshold_and_infer_uses_it(run, sqlite_runtime) -> None:  # type: ignore[no-untyped-def]
    """A new user's path on playing_cards (tags only): the train job picks a card-sized threshold
    from the classifier's crops, stores it as the version's calibration, and the infer job's
    proposals are exactly that rule's boxes of the stored maps."""
    root = dev_dataset("playing_cards")
    run("collections", "create", "cards")
    run("import", "cards", str(root / "images"), "--manifest", str(root / "manifest.csv"), "--wait")
    run("train", "cards", "--wait")
    run("infer", "cards", "--wait")
    with sqlite_runtime.sessions() as session:
        version = session.scalars(select(ModelVersion)).one()
        spec = ModelSpec.from_dict(version.spec)
        report = spec.extra["threshold_choice"]
        assert report["threshold"] == 0.5 and version.calibration["threshold"] == 0.5, report
        params = BoxParams.from_dict(version.calibration)
        assert model_box_params(spec) == params
        train = session.scalars(select(Job).where(Job.kind == "train")).one()
        assert "threshold 0.5" in train.result["box_threshold"], train.result
        assert "Box threshold: 0.5 of each map's maximum" in train.result["summary"], train.result
        assert train.result["objectness_only"] == [], train.result  # every class map agrees with the objectness
        assert train.result["tags_told_apart"] is True, train.result  # look-alike cards, told apart on held-out photos
        rows = session.execute(select(ConceptMap.image_id, ConceptMap.category_id, ConceptMap.raw_key)).all()
        assert len(rows) > 300
        class_of = {cid: spec.class_names.index(name) for cid, name in session.execute(select(Category.id, Category.name))}
        differs_from_mean_rule = 0
        for image_id in sorted({r[0] for r in rows})[:25]:
            image = session.get(Image, image_id)
            assert image is not None and image.width and image.height
            size = (image.width, image.height)
            maps = {class_of[cat]: decode_map(sqlite_runtime.blobs.read_bytes(key)) for i, cat, key in rows if i == image_id}
            boxes, _scores, labels = boxes_from_maps(maps, size, params)  # from the float16 maps as stored
            stored = session.execute(select(Box.x1, Box.y1, Box.x2, Box.y2, Box.category_id)
                                     .where(Box.image_id == image_id, Box.source == BoxSource.cam)).all()
            got = torch.tensor([[s[0], s[1], s[2], s[3]] for s in stored], dtype=torch.float32).reshape(-1, 4)
            assert sorted(class_of[s[4]] for s in stored) == sorted(labels.tolist()), image_id
            assert len(got) and bool((box_iou(got, boxes).max(dim=1).values >= 0.9).all()), (image_id, got, boxes)
            mean_rule = boxes_from_maps(maps, size, BoxParams())[0]
            differs_from_mean_rule += int(len(mean_rule) != len(got) or bool((box_iou(got, mean_rule).max(dim=1).values < 0.9).any()))
        assert differs_from_mean_rule >= 10, differs_from_mean_rule


def _voc_truth(path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(boxes[M, 4] xyxy pixels, (width, height) the boxes are in)`` of a VOC annotation."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    size = (int(root.findtext("size/width") or 0), int(root.findtext("size/height") or 0))
    boxes = [[float(o.findtext(f"bndbox/{k}") or 0) for k in ("xmin", "ymin", "xmax", "ymax")] for o in root.findall("object")]
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), size


@pytest.mark.timeout(1800)  # imports, trains on and infers 119 photos in processes, twice
def test_twenty_reviewed_photos_teach_a_location_map_that_improves_the_other_proposals(run, sqlite_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Through the CLI: 119 raccoon/kangaroo photos with 12 tags drawn at random (tags the classifier
    cannot tell apart: under two reviewed photos per tag). The reviewer draws the animals of 20
    photos; the calibrate job learns a location map on the stored descriptor codes, re-proposes
    every other photo's boxes (better against the ground truth, which camlabel never sees),
    leaves the reviewed boxes alone, and a later infer job proposes the same boxes."""
    import csv
    import random
    import shutil

    from camcore.metrics import corloc

    root = dev_dataset("raccoon-kangaroo")
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = random.Random(0)
    truth_of: dict[str, tuple[torch.Tensor, tuple[int, int]]] = {}
    tag_of: dict[str, str] = {}
    for animal in ("kangaroo", "raccoon"):
        for photo in sorted((root / animal / "images").glob("*.jpg"))[:60]:
            if photo.name == "00090.jpg":  # the truncated file
                continue
            name = f"{animal}-{photo.name}"
            shutil.copyfile(photo, folder / name)  # the importer skips symbolic links
            truth_of[name] = _voc_truth(root / animal / "annotations" / f"{photo.stem}.xml")
            tag_of[name] = f"tag{rng.randrange(12)}"
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "tags"])
        writer.writerows(sorted(tag_of.items()))
    run("collections", "create", "rt")
    run("import", "rt", str(folder), "--manifest", str(manifest), "--wait")
    trained = run("train", "rt", "--wait")
    # the held-out test sees that the classifier does not tell these tags apart: every class is
    # boxed by the collection's objectness alone, from each map's mean
    assert "does not tell the tags apart on held-out images" in trained.output, trained.output
    assert "12 of 12 classes are boxed by the collection's objectness alone" in trained.output, trained.output
    run("infer", "rt", "--wait")

    def proposals_and_truth() -> tuple[dict[int, tuple], dict[int, tuple], dict[int, str]]:
        with sqlite_runtime.sessions() as session:
            category = dict(session.execute(select(Category.name, Category.id)).all())
            images = session.execute(select(Image.id, Image.rel_path, Image.width, Image.height)).all()
            preds, truth, names = {}, {}, {}
            for image_id, rel_path, width, height in images:
                name = Path(rel_path).name
                boxes, (w0, h0) = truth_of[name]
                scale = torch.tensor([width / w0, height / h0, width / w0, height / h0])
                truth[image_id] = (boxes * scale, torch.full((len(boxes),), category[tag_of[name]], dtype=torch.long))
                rows = session.execute(select(Box.x1, Box.y1, Box.x2, Box.y2, Box.score, Box.category_id)
                                       .where(Box.image_id == image_id, Box.source == BoxSource.cam)).all()
                preds[image_id] = (torch.tensor([r[:4] for r in rows], dtype=torch.float32).reshape(-1, 4),
                                   torch.tensor([r[4] for r in rows], dtype=torch.float32),
                                   torch.tensor([r[5] for r in rows], dtype=torch.long))
                names[image_id] = name
        return preds, truth, names

    before, truth, names = proposals_and_truth()
    # a draw whose map is adopted (on these photos the first 8 draws adopt it 7 times; draw 0 does not)
    reviewed_ids = sorted(random.Random(2).sample(sorted(truth), 20))
    with sqlite_runtime.sessions() as session:  # what the image view's "draw a box" stores
        for image_id in reviewed_ids:
            for box, category_id in zip(*truth[image_id], strict=True):
                x1, y1, x2, y2 = box.tolist()
                session.add(Box(image_id=image_id, category_id=int(category_id), x1=x1, y1=y1, x2=x2, y2=y2,
                                source=BoxSource.human, status=ReviewStatus.accepted))
        session.commit()
        human_before = sorted(session.execute(select(Box.id, Box.x1, Box.y1, Box.x2, Box.y2).where(Box.source == BoxSource.human)).all())
    out = run("calibrate", "rt", "--wait")
    assert "location map learned from the reviewed boxes: adopted" in out.output, out.output
    after, _truth, _names = proposals_and_truth()
    rest = [i for i in sorted(truth) if i not in reviewed_ids]
    corloc_before = corloc([before[i] for i in rest], [truth[i] for i in rest])
    corloc_after = corloc([after[i] for i in rest], [truth[i] for i in rest])
    assert corloc_after >= corloc_before + 0.05, (corloc_before, corloc_after)
    with sqlite_runtime.sessions() as session:
        assert sorted(session.execute(select(Box.id, Box.x1, Box.y1, Box.x2, Box.y2).where(Box.source == BoxSource.human)).all()) == human_before
        calibration = session.scalars(select(ModelVersion)).one().calibration
        assert calibration["extra"]["calibration"]["review_map"]["adopted"] is True and "review_map" in calibration["extra"]
        # the stored scores weigh each box by the GT-free proposals (the version's params before calibration)
        agreement = calibration["extra"]["proposal_agreement"]
        assert agreement["fitted_on"] >= 20 and agreement["proposals"]["threshold"] is None and not agreement["proposals"]["per_class"]
        assert not session.scalars(select(Box).where(Box.image_id.in_(reviewed_ids), Box.source == BoxSource.cam,
                                                     Box.status == ReviewStatus.proposed)).all()

    run("infer", "rt", "--wait")  # a later infer job applies the stored location map too
    again, _truth, _names = proposals_and_truth()
    for i in rest[:30]:
        assert len(again[i][0]) == len(after[i][0]) and bool((box_iou(again[i][0], after[i][0]).max(dim=1).values >= 0.95).all()), names[i]
