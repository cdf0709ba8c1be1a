"""Dashboard safety and ground truth without a browser: a collection is deleted only after its
name is typed, ground truth uploads report what they did, job counts say how far a job got."""

from __future__ import annotations

import io
import json

from flask import Flask

from tests.web.helpers import Factory
from worker.store.models import Box, BoxSource, Collection, Job, JobKind, JobStatus


def test_collection_is_deleted_only_after_typing_its_name(app: Flask, factory: Factory, admin) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection("keep me")
    page = admin.client.get(f"/collections/{cid}").get_data(as_text=True)
    assert 'data-confirm-name="keep me"' in page and 'name="confirm_name"' in page
    refused = admin.form(f"/collections/{cid}/delete", {}, follow_redirects=True).get_data(as_text=True)
    assert "Not deleted: type the collection&#39;s name (keep me) to confirm." in refused
    admin.form(f"/collections/{cid}/delete", {"confirm_name": "keep"})
    assert factory.get(Collection, cid) is not None
    done = admin.form(f"/collections/{cid}/delete", {"confirm_name": "keep me"}, follow_redirects=True).get_data(as_text=True)
    assert "Collection keep me deleted." in done and factory.get(Collection, cid) is None


def _coco(file_name: str, bbox: list[float]) -> bytes:
    return json.dumps({"images": [{"id": 7, "file_name": file_name, "width": 64, "height": 48}],
                       "categories": [{"id": 1, "name": "raccoon"}],
                       "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": bbox, "area": 1, "iscrowd": 0}]}).encode()


def test_ground_truth_upload_from_the_dashboard_and_the_api(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection()
    image = factory.image(cid, "raccoon/a.png")
    page = reviewer.client.post(f"/collections/{cid}/ground-truth", data={"csrf_token": reviewer.csrf, "format": "coco",
                                "file": (io.BytesIO(_coco("a.png", [2, 3, 20, 10])), "gt.json")},
                                content_type="multipart/form-data", follow_redirects=True).get_data(as_text=True)
    assert "Ground truth imported: 1 image(s) matched, 1 box(es)" in page
    with factory.session() as s:
        [(x1, y1, x2, y2)] = s.query(Box.x1, Box.y1, Box.x2, Box.y2).filter(Box.image_id == image, Box.source == BoxSource.ground_truth).all()
    assert (x1, y1, x2, y2) == (2, 3, 22, 13)

    nothing = reviewer.client.post(f"/collections/{cid}/ground-truth", data={"csrf_token": reviewer.csrf, "format": "coco",
                                   "file": (io.BytesIO(_coco("zzz.png", [1, 1, 5, 5])), "gt.json")},
                                   content_type="multipart/form-data", follow_redirects=True).get_data(as_text=True)
    assert "no ground truth was imported" in nothing and "zzz.png" in nothing

    api = reviewer.api("POST", f"/api/v1/collections/{cid}/ground-truth", data={"format": "voc", "file": (io.BytesIO(b"{}"), "gt.json")},
                       content_type="multipart/form-data")
    assert api.status_code == 400 and api.get_json()["error"]["field"] == "file"
    missing = reviewer.api("POST", f"/api/v1/collections/{cid}/ground-truth", data={"format": "coco"}, content_type="multipart/form-data")
    assert missing.status_code == 400 and missing.get_json()["error"]["field"] == "file"
    ok = reviewer.api("POST", f"/api/v1/collections/{cid}/ground-truth", data={"format": "coco", "file": (io.BytesIO(_coco("a.png", [0, 0, 8, 8])), "gt.json")},
                      content_type="multipart/form-data")
    assert ok.status_code == 200 and ok.get_json()["boxes_replaced"] == 1 and ok.get_json()["boxes_imported"] == 1


def test_job_counts_say_how_far_a_job_got(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection()
    with factory.session() as s:
        s.add(Job(collection_id=cid, kind=JobKind.infer, status=JobStatus.cancelled, done=8, total=16, params={}))
        s.add(Job(collection_id=cid, kind=JobKind.train, status=JobStatus.queued, done=0, total=None, params={}))
        s.commit()
    page = reviewer.client.get(f"/collections/{cid}").get_data(as_text=True)
    assert "cancelled at 8/16" in page and "waiting" in page and "0/?" not in page
