"""Jobs through the API (start, progress JSON, cancel) and export downloads (COCO of accepted
boxes by default, every box with scores on request)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from flask import Flask

from tests.web.helpers import Factory, wait_job
from worker.store.models import Job, JobKind, JobStatus


def _job_row(factory: Factory, collection_id: int, status: JobStatus) -> int:
    with factory.session() as s:
        job = Job(collection_id=collection_id, kind=JobKind.infer, status=status, done=2, total=9, params={})
        s.add(job)
        s.commit()
        return job.id


def test_job_progress_and_cancel(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection()
    queued = _job_row(factory, cid, JobStatus.queued)
    running = _job_row(factory, cid, JobStatus.running)
    body = reviewer.api("GET", f"/api/v1/jobs/{running}").get_json()
    assert {k: body[k] for k in ("kind", "status", "done", "total", "error")} == {"kind": "infer", "status": "running", "done": 2, "total": 9, "error": None}
    assert reviewer.api("POST", f"/api/v1/jobs/{queued}/cancel").get_json()["status"] == "cancelled"
    cancelling = reviewer.api("POST", f"/api/v1/jobs/{running}/cancel").get_json()
    assert cancelling["status"] == "running" and cancelling["cancel_requested"] is True
    page = reviewer.form(f"/jobs/{running}/cancel", {}, follow_redirects=True).get_data(as_text=True)
    assert f"Cancel requested for job {running}" in page
    listed = reviewer.api("GET", f"/api/v1/collections/{cid}/jobs?limit=1").get_json()
    assert [j["id"] for j in listed["items"]] == [running] and listed["next_cursor"] == str(running)
    rest = reviewer.api("GET", f"/api/v1/collections/{cid}/jobs?limit=1&cursor={listed['next_cursor']}").get_json()
    assert [j["id"] for j in rest["items"]] == [queued]
    assert reviewer.api("POST", "/api/v1/jobs/99999/cancel").status_code == 404


def test_start_job_validation_and_a_failing_job_reports_its_error(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection()
    assert reviewer.api("POST", f"/api/v1/collections/{cid}/jobs", {"kind": "import"}).status_code == 400
    assert reviewer.api("POST", f"/api/v1/collections/{cid}/jobs", {"kind": "export", "params": {"format": "pdf"}}).status_code == 400
    assert reviewer.api("POST", "/api/v1/collections/424242/jobs", {"kind": "train"}).status_code == 404
    image = factory.image(cid, "raccoon/a.png")
    started = reviewer.api("POST", f"/api/v1/collections/{cid}/jobs", {"kind": "calibrate"})
    assert started.status_code == 202
    job = wait_job(reviewer, started.get_json()["id"])
    assert job["status"] == "failed" and job["error"], job  # nothing inferred to calibrate
    page = reviewer.client.get(f"/collections/{cid}").get_data(as_text=True)
    assert job["error"].split("'")[0][:30] in page
    assert image


def test_export_download_accepted_by_default_all_with_scores(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, cats = factory.collection()
    image_id = factory.image(cid, "raccoon/a.png")
    factory.image(cid, "kangaroo/empty.png", seed=3)
    factory.box(image_id, cats["raccoon"], score=0.9, status="accepted", xyxy=(1, 2, 11, 22))
    factory.box(image_id, cats["raccoon"], score=0.4, status="proposed", xyxy=(5, 5, 25, 25))
    factory.box(image_id, cats["kangaroo"], score=0.3, status="rejected", xyxy=(3, 3, 9, 9))
    today = datetime.now(UTC).strftime("%Y%m%d")
    with reviewer.client.get(f"/api/v1/collections/{cid}/export") as response:
        assert response.status_code == 200 and response.mimetype == "application/json"
        assert response.headers["Content-Disposition"] == f"attachment; filename=animals-coco-{today}.json"
        coco = json.loads(response.data)
    assert [i["file_name"] for i in coco["images"]] == ["raccoon/a.png"]  # nobody reviewed empty.png
    assert [a["bbox"] for a in coco["annotations"]] == [[1, 2, 10, 20]]
    with reviewer.client.get(f"/api/v1/collections/{cid}/export?include_unreviewed=1") as response:
        assert len(json.loads(response.data)["images"]) == 2
    bad = reviewer.api("GET", f"/api/v1/collections/{cid}/export?include_unreviewed=maybe")
    assert bad.status_code == 400 and "include_unreviewed" in bad.get_json()["error"]["message"]
    bad = reviewer.api("GET", f"/api/v1/collections/{cid}/export?format=voc&val_fraction=2")
    assert bad.status_code == 400 and "val_fraction" in bad.get_json()["error"]["message"]
    with reviewer.client.get(f"/api/v1/collections/{cid}/export?status=all&include_unreviewed=true") as response:
        everything = json.loads(response.data)
    assert sorted(a["score"] for a in everything["annotations"]) == [0.4, 0.9]
    with reviewer.client.get(f"/api/v1/collections/{cid}/export?format=yolo&val_fraction=0.5&seed=3") as response:
        assert response.mimetype == "application/zip" and response.data[:2] == b"PK"
        assert response.headers["Content-Disposition"] == f"attachment; filename=animals-yolo-{today}.zip"
    assert reviewer.api("GET", f"/api/v1/collections/{cid}/export?format=pdf").status_code == 400
    started = reviewer.api("POST", f"/api/v1/collections/{cid}/jobs", {"kind": "export", "params": {"format": "coco"}})
    job = wait_job(reviewer, started.get_json()["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["filename"] == f"animals-coco-{today}.json"
    with reviewer.client.get(f"/api/v1/jobs/{job['id']}/download") as response:
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Content-Disposition"] == f"attachment; filename=animals-coco-{today}.json"
        assert json.load(io.BytesIO(response.data))["annotations"][0]["bbox"] == [1, 2, 10, 20]
    page = reviewer.client.get(f"/collections/{cid}").get_data(as_text=True)
    assert f"/api/v1/jobs/{job['id']}/download" in page and f"animals-coco-{today}.json" in page
    assert reviewer.api("GET", f"/api/v1/jobs/{started.get_json()['id'] + 1000}/download").status_code == 404


def test_calibrate_starts_from_the_dashboard_and_reports_why_it_cannot_run(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection()
    page = reviewer.client.get(f"/collections/{cid}").get_data(as_text=True)
    assert 'id="start-calibrate"' in page
    started = reviewer.form(f"/collections/{cid}/jobs", {"kind": "calibrate"}, follow_redirects=True).get_data(as_text=True)
    assert "Calibrate job" in started and "started" in started
    listed = reviewer.api("GET", f"/api/v1/collections/{cid}/jobs").get_json()["items"]
    job = wait_job(reviewer, listed[0]["id"])
    assert job["kind"] == "calibrate" and job["status"] == "failed"
    assert "run an infer job first" in job["error"]
    assert 'id="preview-calibrate"' in page  # the gain can be previewed before anything changes
    previewed = reviewer.form(f"/collections/{cid}/jobs", {"kind": "calibrate", "preview": "1"}, follow_redirects=True)
    assert previewed.status_code == 200
    preview = wait_job(reviewer, reviewer.api("GET", f"/api/v1/collections/{cid}/jobs").get_json()["items"][0]["id"])
    assert preview["params"].get("preview") is True
    bad = reviewer.form(f"/collections/{cid}/jobs", {"kind": "calibrate", "preview": "maybe"}, follow_redirects=True)
    assert "preview must be true or false" in bad.get_data(as_text=True)
