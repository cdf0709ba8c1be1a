"""Jobs that cannot run are refused with a 400 and the reason before anything is queued."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import func, select

from tests.web.helpers import Factory
from worker.store.models import ImageTag, Job


def _jobs(factory: Factory) -> int:
    with factory.session() as s:
        return int(s.scalar(select(func.count()).select_from(Job)))


def _start(reviewer, cid: int, kind: str, **params):  # type: ignore[no-untyped-def]
    return reviewer.api("POST", f"/api/v1/collections/{cid}/jobs", {"kind": kind, "params": params})


def test_train_refused_on_an_empty_or_untagged_collection_or_an_unknown_arch(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, cats = factory.collection()
    empty = _start(reviewer, cid, "train")
    assert empty.status_code == 400 and "no images to train on" in empty.get_json()["error"]["message"]
    image = factory.image(cid, "a.png")
    untagged = _start(reviewer, cid, "train")
    assert untagged.status_code == 400 and "no image of the collection has a tag" in untagged.get_json()["error"]["message"]
    with factory.session() as s:
        s.add(ImageTag(image_id=image, category_id=cats["raccoon"]))
        s.commit()
    unknown = _start(reviewer, cid, "train", arch="resnet999")
    error = unknown.get_json()["error"]
    assert unknown.status_code == 400 and error["field"] == "arch"
    assert "unknown architecture 'resnet999'" in error["message"] and "efficientnet_lite0" in error["message"]
    assert _jobs(factory) == 0  # nothing was queued
    assert _start(reviewer, cid, "train", arch="tiny_cnn", epochs=1).status_code == 202


def test_evaluate_and_infer_refused_without_what_they_need(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, cats = factory.collection()
    no_images = _start(reviewer, cid, "infer")
    assert no_images.status_code == 400 and "no images to run the model on" in no_images.get_json()["error"]["message"]
    image = factory.image(cid, "a.png")
    untrained = _start(reviewer, cid, "infer")
    assert untrained.status_code == 400 and "no model has been trained on this collection" in untrained.get_json()["error"]["message"]
    missing = _start(reviewer, cid, "infer", model_version_id=999)
    assert missing.status_code == 400 and missing.get_json()["error"]["field"] == "model_version_id"
    no_gt = _start(reviewer, cid, "evaluate")
    assert no_gt.status_code == 400 and "no ground truth to evaluate against" in no_gt.get_json()["error"]["message"]
    bad_status = _start(reviewer, cid, "evaluate", box_status="maybe")
    assert bad_status.status_code == 400 and bad_status.get_json()["error"]["field"] == "box_status"
    assert _jobs(factory) == 0
    factory.box(image, cats["raccoon"], score=1.0, status="accepted", source="ground_truth")
    assert _start(reviewer, cid, "evaluate", box_status="reviewed").status_code == 202


def test_dashboard_form_shows_why_a_job_was_refused(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection()
    page = reviewer.form(f"/collections/{cid}/jobs", {"kind": "train", "arch": "efficientnet_lite0"}, follow_redirects=True)
    assert "no images to train on" in page.get_data(as_text=True)
    assert _jobs(factory) == 0


def test_dashboard_train_form_takes_an_input_size_and_refuses_a_bad_one(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, cats = factory.collection()
    image = factory.image(cid, "a.png")
    with factory.session() as s:
        s.add(ImageTag(image_id=image, category_id=cats["raccoon"]))
        s.commit()
    page = reviewer.client.get(f"/collections/{cid}").get_data(as_text=True)
    assert 'name="input_size" id="train-input-size" type="number" min="16" max="4096"' in page
    refused = reviewer.form(f"/collections/{cid}/jobs", {"kind": "train", "arch": "tiny_cnn", "input_size": "99999"}, follow_redirects=True)
    assert "input_size" in refused.get_data(as_text=True) and _jobs(factory) == 0
    for given, stored in (("", None), ("864", 864)):
        reviewer.form(f"/collections/{cid}/jobs", {"kind": "train", "arch": "tiny_cnn", "input_size": given}, follow_redirects=True)
        with factory.session() as s:
            job = s.scalars(select(Job).order_by(Job.id.desc())).first()
            assert job is not None and job.kind == "train" and job.params.get("input_size") == stored, job.params
