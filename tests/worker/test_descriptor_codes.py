"""Descriptor codes: the infer job stores one codes blob per image (named by each of the image's
concept-map rows), the calibrate job hands them to camcore (one blob read per image), and the
dashboard line says whether the location map learned from them was adopted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

import camcore.calibration
from camcore.concept_maps import decode_codes, decode_map
from camcore.resolution import ResolutionCheck
from worker.jobs.calibrating import learning_summary, resolution_summary, review_map_summary
from worker.store.models import Box, BoxSource, ConceptMap, Job, ReviewStatus


@pytest.fixture
def inferred(run, photos: Path) -> None:  # type: ignore[no-untyped-def]
    """Collection ``rk`` of eight real photos, a small model trained on it (``ddt_cam``, camlabel's
    default map method) and its infer job done."""
    run("collections", "create", "rk")
    run("import", "rk", str(photos))
    run("train", "rk", "--arch", "tiny_cnn", "--input-size", "96", "--epochs", "10", "--wait")
    run("infer", "rk", "--wait")


def test_infer_stores_one_codes_blob_per_image_on_the_maps_grid(inferred, sqlite_runtime) -> None:  # type: ignore[no-untyped-def]
    blobs = sqlite_runtime.blobs
    with sqlite_runtime.sessions() as session:
        rows = session.execute(select(ConceptMap.image_id, ConceptMap.raw_key, ConceptMap.codes_key)).all()
    assert rows
    by_image: dict[int, set[str | None]] = {}
    for image_id, _raw, codes_key in rows:
        by_image.setdefault(image_id, set()).add(codes_key)
    assert all(len(keys) == 1 and None not in keys for keys in by_image.values()), by_image  # the image's maps share it
    assert len({key for keys in by_image.values() for key in keys}) == len(by_image)  # one per image (real photos differ)
    decoded: dict[str, Any] = {}
    for image_id, raw_key, codes_key in rows:
        assert codes_key.startswith("codes/") and blobs.exists(codes_key), (image_id, codes_key)
        if codes_key not in decoded:
            decoded[codes_key] = decode_codes(blobs.read_bytes(codes_key))
        codes = decoded[codes_key]
        assert codes.ndim == 3 and codes.shape[0] >= 1
        assert tuple(codes.shape[1:]) == tuple(decode_map(blobs.read_bytes(raw_key)).shape), (image_id, codes.shape)


def _review_first_proposals(sqlite_runtime, n: int) -> set[int]:  # type: ignore[no-untyped-def]
    """Accept the first proposal of ``n`` images (every second one moved a little, as an edit); their ids."""
    with sqlite_runtime.sessions() as session:
        first: dict[int, Box] = {}
        for box in session.scalars(select(Box).where(Box.source == BoxSource.cam).order_by(Box.image_id, Box.id)):
            first.setdefault(box.image_id, box)
        reviewed = list(first.values())[:n]
        for k, box in enumerate(reviewed):
            box.status = ReviewStatus.accepted if k % 2 == 0 else ReviewStatus.edited
            if k % 2:
                box.x1, box.y1 = box.x1 + 2, box.y1 + 2
        session.commit()
        return {box.image_id for box in reviewed}


def test_calibrate_job_passes_the_images_codes_and_reports_the_location_map(inferred, run, sqlite_runtime,  # type: ignore[no-untyped-def]
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    reviewed = _review_first_proposals(sqlite_runtime, 4)
    with sqlite_runtime.sessions() as session:
        image_ids = sorted(set(session.scalars(select(ConceptMap.image_id))))
        without = next(i for i in image_ids if i not in reviewed)  # maps stored before codes existed
        session.execute(update(ConceptMap).where(ConceptMap.image_id == without).values(codes_key=None))
        session.commit()
    seen: dict[str, list[dict[Any, Any] | None]] = {"calibrate": [], "apply": []}
    applied_maps: list[set[Any]] = []
    calibrate, apply = camcore.calibration.calibrate, camcore.calibration.apply
    reads = Counter[str]()
    read_bytes = type(sqlite_runtime.blobs).read_bytes

    def counting_read(self, key: str) -> bytes:  # type: ignore[no-untyped-def]
        reads[key] += 1
        return read_bytes(self, key)

    def spy_calibrate(*args: Any, codes_by_image: Any = None, **kwargs: Any) -> dict[str, Any]:
        seen["calibrate"].append(dict(codes_by_image) if codes_by_image is not None else None)
        return calibrate(*args, codes_by_image=codes_by_image, **kwargs)

    def spy_apply(maps_by_image: Any, *args: Any, codes_by_image: Any = None, **kwargs: Any) -> Any:
        seen["apply"].append(dict(codes_by_image) if codes_by_image is not None else None)
        applied_maps.append(set(maps_by_image))
        return apply(maps_by_image, *args, codes_by_image=codes_by_image, **kwargs)

    monkeypatch.setattr(camcore.calibration, "calibrate", spy_calibrate)
    monkeypatch.setattr(camcore.calibration, "apply", spy_apply)
    monkeypatch.setattr(type(sqlite_runtime.blobs), "read_bytes", counting_read)
    out = run("calibrate", "rk", "--wait")

    (given,) = seen["calibrate"]
    assert given is not None and set(given) == reviewed  # every reviewed image's codes, nothing else
    assert all(codes.ndim == 3 for codes in given.values())
    assert seen["apply"] and all(codes is not None for codes in seen["apply"])
    for codes, maps in zip(seen["apply"], applied_maps, strict=True):
        assert codes is not None and set(codes) == maps - {without}  # an image without codes keeps its raw maps
    assert without in set().union(*applied_maps)
    codes_reads = {key: n for key, n in reads.items() if key.startswith("codes/")}
    assert codes_reads and max(codes_reads.values()) <= 2  # at most twice per image (the job reads each once)
    with sqlite_runtime.sessions() as session:
        job = session.scalars(select(Job).where(Job.kind == "calibrate")).one()
        report = job.result["calibration"]["review_map"]
    assert isinstance(report["adopted"], bool)
    assert "location map learned from the reviewed boxes: " in job.result["summary"]
    assert "location map learned from the reviewed boxes: " in out.output


def _params(review_map: dict[str, Any] | None) -> dict[str, Any]:
    calibration: dict[str, Any] = {"collection": {"params": "base", "pairs": 20}, "box_scorer": {"fitted_on": 12}}
    if review_map is not None:
        calibration["review_map"] = review_map
    return {"extra": {"calibration": calibration}}


def test_learning_summary_says_whether_the_location_map_was_adopted() -> None:
    adopted = {"adopted": True, "images": 12, "pairs": 20, "plain": {"hits": 14, "mean_iou": 0.512},
               "learned": {"hits": 17, "mean_iou": 0.634}}
    line = learning_summary(_params(adopted), 12, preview=False)
    assert ("box scores refitted on 12 boxes; location map learned from the reviewed boxes: adopted "
            "(hits 14 -> 17 of 20 reviewed pairs on 12 images, mean IoU 0.51 -> 0.63). Estimated (leave-one-out)") in line
    kept = {**adopted, "adopted": False, "learned": {"hits": 13, "mean_iou": 0.4}}
    assert "location map learned from the reviewed boxes: not adopted (hits 14 -> 13 of 20 reviewed pairs on 12 images" in \
        learning_summary(_params(kept), 12, preview=True)
    refused = learning_summary(_params({"adopted": False, "reason": "no descriptor codes for the reviewed images"}), 12, preview=False)
    assert "location map learned from the reviewed boxes: not adopted (no descriptor codes for the reviewed images)." in refused


def test_learning_summary_without_a_review_map_entry_is_the_line_it_was() -> None:
    line = learning_summary(_params(None), 12, preview=False)
    assert line == ("learned from 12 reviewed images: the threshold rule is kept; box size corrected for 0 class(es); "
                    "box scores refitted on 12 boxes. Estimated (leave-one-out): +0 of 20 reviewed image/class pairs localised.")
    assert review_map_summary(None) == review_map_summary({}) == ""
    assert review_map_summary({"adopted": True, "plain": {"hits": 1, "mean_iou": 0.5}, "learned": {"hits": 2, "mean_iou": 0.6}}) == \
        "location map learned from the reviewed boxes: adopted (hits 1 -> 2, mean IoU 0.50 -> 0.60)"


def test_learning_summary_says_the_scores_are_weighed_by_the_proposals_before_review() -> None:
    params = _params(None)
    params["extra"]["calibration"]["proposal_agreement"] = {"proposals": {}, "slope": 0.9, "bias": 0.4, "fitted_on": 12}
    assert "box scores refitted on 12 boxes and weighed by their agreement with the boxes proposed before review. " in \
        learning_summary(params, 12, preview=False)


def test_calibrate_preview_says_to_train_larger_when_the_reviewed_objects_are_smaller_than_the_maps_cells(  # type: ignore[no-untyped-def]
        inferred, run, sqlite_runtime) -> None:
    reviewed = _review_first_proposals(sqlite_runtime, 4)
    with sqlite_runtime.sessions() as session:  # the reviewer shrinks each box to a 6 x 6 px object
        for box in session.scalars(select(Box).where(Box.image_id.in_(reviewed), Box.status != ReviewStatus.proposed)):
            box.x2, box.y2 = box.x1 + 6, box.y1 + 6
            box.status = ReviewStatus.edited
        session.commit()
    out = run("calibrate", "rk", "--preview", "--wait")
    with sqlite_runtime.sessions() as session:
        job = session.scalars(select(Job).where(Job.kind == "calibrate")).one()
        result = job.result
        raw_key = session.scalars(select(ConceptMap.raw_key)).first()
    check = result["calibration"]["resolution"]
    assert check["boxes"] == 4 and check["too_small"] is True
    assert check["grid"] == max(decode_map(sqlite_runtime.blobs.read_bytes(raw_key)).shape)  # the stored maps' cells
    suggested = ResolutionCheck.from_dict(check).suggested_input_size(96)
    assert suggested > 96
    assert (f"a model trained with input size {suggested} (now 96; the Train form's input size, or "
            f"`camlabel train NAME --input-size {suggested}`) has cells fine enough for them") in result["summary"]
    assert f"--input-size {suggested}" in out.output


def test_learning_summary_says_which_input_size_boxes_objects_too_small_for_the_cells() -> None:
    params = _params(None)
    params["extra"]["calibration"]["resolution"] = {"boxes": 40, "median_side_cells": 1.29, "grid": 14}
    line = learning_summary(params, 12, preview=False, input_size=448)
    assert line.endswith("pairs localised. The reviewed objects are small for the model's map cells (median side 1.3 cells "
                         "of a 14x14 map; about 2.4 are needed to box at IoU 0.5): a model trained with input size 864 (now 448; "
                         "the Train form's input size, or `camlabel train NAME --input-size 864`) has cells fine enough for "
                         "them, at about 3.7x the time per image.")
    assert "a model trained with a larger input size has finer cells" in learning_summary(params, 12, preview=False)  # size unknown
    assert "no larger input size than 4096 is available" in learning_summary(params, 12, preview=False, input_size=4096)
    params["extra"]["calibration"]["resolution"] = {"boxes": 40, "median_side_cells": 4.5, "grid": 14}
    assert learning_summary(params, 12, preview=False, input_size=448) == learning_summary(_params(None), 12, preview=False)
    params["extra"]["calibration"]["resolution"] = {"boxes": "many"}  # a malformed report says nothing rather than fail
    assert resolution_summary(params["extra"]["calibration"]["resolution"], 448) == ""


def test_learning_summary_counts_the_corrections_kept_and_says_how_many_leave_one_out_declined() -> None:
    params = _params(None)
    loo = {"uncorrected": {"hits": 3, "mean_iou": 0.41}, "corrected": {"hits": 2, "mean_iou": 0.38}}
    params["extra"]["calibration"] |= {
        "0": {"images": 6, "params": "base", "correction": {"width": 0.8, "height": 1.1, "shift_y": 0.0, "images": 6, "declined": False}},
        "1": {"images": 7, "params": "base", "correction": {"width": 0.5, "height": 0.6, "shift_y": 0.0, "images": 7, "declined": True,
                                                            "leave_one_out": loo}},
        "2": {"images": 2, "params": "base", "correction": {"width": 1.0, "height": 1.0, "shift_y": 0.0, "images": 0, "declined": False}},
    }
    line = learning_summary(params, 12, preview=False)
    assert ("box size corrected for 1 class(es) (1 correction(s) declined: worse when each reviewed image is left out); "
            "box scores refitted on 12 boxes.") in line
