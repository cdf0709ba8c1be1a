"""Uploads are staged under ``<data_dir>/staging`` only until their import job ends: after an
upload and import through the API the folder is gone and the images are still served; an
import cancelled before a worker took it removes its folder too; a refused upload leaves none."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from flask import Flask

from tests.web.helpers import Factory, wait_job
from worker.staging import staging_root


def _staged(app: Flask) -> list[Path]:
    root = staging_root(app.extensions["camlabel"].settings.data_dir)
    return sorted(root.iterdir()) if root.is_dir() else []


def _photos(shared_dataset: Path, n: int) -> list[Path]:
    return sorted((shared_dataset / "kangaroo" / "images").glob("*.jpg"))[:n]


def test_upload_and_import_leave_no_staging_and_images_are_served(app: Flask, factory: Factory, reviewer, shared_dataset: Path) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection("staged", categories=())
    photos = _photos(shared_dataset, 2)
    files = [(io.BytesIO(p.read_bytes()), p.name) for p in photos]
    response = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", data={"files": files, "tag": "kangaroo"}, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    job = wait_job(reviewer, response.get_json()["job"]["id"])
    assert job["status"] == "succeeded", job

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for photo in _photos(shared_dataset, 4)[2:]:
            zf.writestr(f"kangaroo/{photo.name}", photo.read_bytes())
    archive.seek(0)
    zipped = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", data={"files": (archive, "more.zip")}, content_type="multipart/form-data")
    assert zipped.status_code == 202, zipped.get_json()
    assert wait_job(reviewer, zipped.get_json()["job"]["id"])["status"] == "succeeded"

    assert _staged(app) == []
    images = reviewer.api("GET", f"/api/v1/collections/{cid}/images?sort=id").get_json()["items"]
    assert len(images) == 4
    originals = {p.name: p.read_bytes() for p in _photos(shared_dataset, 4)}
    for image in images:
        with reviewer.client.get(image["url"]) as served:
            assert served.status_code == 200 and served.headers["Content-Type"] == "image/jpeg"
            assert served.data == originals[Path(image["rel_path"]).name]
        with reviewer.client.get(image["thumb_url"]) as thumb:
            assert thumb.status_code == 200 and thumb.data.startswith(b"\xff\xd8")


def test_import_cancelled_while_queued_removes_its_staging(app: Flask, factory: Factory, reviewer, shared_dataset: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import worker.queue.submit

    cid, _ = factory.collection("queued", categories=())
    monkeypatch.setattr(worker.queue.submit, "enqueue", lambda *args, **kwargs: None)  # the broker has not delivered it yet
    photo = _photos(shared_dataset, 1)[0]
    response = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", data={"files": (io.BytesIO(photo.read_bytes()), photo.name)},
                            content_type="multipart/form-data")
    assert response.status_code == 202
    job_id = response.get_json()["job"]["id"]
    assert len(_staged(app)) == 1
    cancelled = reviewer.api("POST", f"/api/v1/jobs/{job_id}/cancel").get_json()
    assert cancelled["status"] == "cancelled"
    assert _staged(app) == []


def test_refused_uploads_leave_no_staging(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection()
    mixed = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads",
                         data={"files": [(io.BytesIO(factory.png()), "a.png"), (io.BytesIO(b"PK"), "b.zip")]}, content_type="multipart/form-data")
    assert mixed.status_code == 400 and mixed.get_json()["error"]["code"] == "mixed_upload"
    not_zip = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", data={"files": (io.BytesIO(b"nope"), "a.zip")}, content_type="multipart/form-data")
    assert not_zip.status_code == 400
    assert _staged(app) == []
