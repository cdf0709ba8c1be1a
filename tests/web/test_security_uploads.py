"""Stored files are served inert; uploads go through staging into a real import job (embedded
worker); zip entries with '..' or absolute paths are refused; oversized uploads get 413."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from flask import Flask

from tests.web.helpers import Factory, login, wait_job


def test_blobs_have_fixed_types_nosniff_and_never_html(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    blobs = app.extensions["camlabel"].blobs
    html_key = blobs.put_bytes(b"<html><script>alert(1)</script></html>", kind="images", suffix=".html")
    svg_key = blobs.put_bytes(b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", kind="images", suffix=".svg")
    png_key = blobs.put_bytes(factory.png(), kind="images", suffix=".png")
    for key in (html_key, svg_key):
        response = reviewer.client.get(f"/blobs/{key}")
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["Content-Disposition"].startswith("attachment")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in response.headers["Content-Security-Policy"]
        response.close()
    with reviewer.client.get(f"/blobs/{png_key}") as image:
        assert image.headers["Content-Type"] == "image/png" and image.headers["X-Content-Type-Options"] == "nosniff"
        assert image.data.startswith(b"\x89PNG")
    assert reviewer.client.get("/blobs/../secret_key").status_code == 404
    assert reviewer.client.get("/blobs/images/00/00/" + "a" * 64 + ".png").status_code == 404


def test_pages_send_csp_and_nosniff(app: Flask, reviewer) -> None:  # type: ignore[no-untyped-def]
    response = reviewer.client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_upload_too_large_is_413_with_a_message(make_app, sqlite_url: str) -> None:  # type: ignore[no-untyped-def]
    from tests.web.helpers import Factory as F

    app = make_app(sqlite_url, MAX_CONTENT_LENGTH=50_000)
    factory = F(app)
    factory.user("r@example.com")
    browser = login(app.test_client(), "r@example.com")
    cid, _ = factory.collection()
    big = io.BytesIO(b"\0" * 80_000)
    api = browser.api("POST", f"/api/v1/collections/{cid}/uploads", data={"files": (big, "big.jpg")}, content_type="multipart/form-data")
    assert api.status_code == 413
    assert "larger than the limit" in api.get_json()["error"]["message"]
    page = browser.client.post(f"/collections/{cid}/upload", data={"csrf_token": browser.csrf, "files": (io.BytesIO(b"\0" * 80_000), "big.jpg")},
                               content_type="multipart/form-data", headers={"Accept": "text/html"})
    assert page.status_code == 413
    assert "larger than the limit" in page.get_data(as_text=True) and page.mimetype == "text/html"


def test_zip_with_parent_or_absolute_entries_is_refused(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection()
    data_dir = Path(app.extensions["camlabel"].settings.data_dir)
    for evil in ("../escape.png", "/abs/escape.png", "raccoon/../../escape.png"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr("raccoon/ok.png", factory.png())
            archive.writestr(evil, factory.png())
        buf.seek(0)
        response = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", data={"files": (buf, "photos.zip")}, content_type="multipart/form-data")
        assert response.status_code == 400, evil
        assert "unsafe path" in response.get_json()["error"]["message"]
    assert not list(data_dir.rglob("escape.png")) and not (data_dir.parent / "escape.png").exists()
    assert not any((data_dir / "staging").iterdir()) if (data_dir / "staging").exists() else True
    not_zip = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", data={"files": (io.BytesIO(b"nope"), "a.zip")}, content_type="multipart/form-data")
    assert not_zip.status_code == 400 and not_zip.get_json()["error"]["code"] == "bad_zip"
    nothing = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", data={}, content_type="multipart/form-data")
    assert nothing.status_code == 400 and nothing.get_json()["error"]["code"] == "no_files"


@pytest.mark.slow
def test_multi_file_upload_imports_real_photos_with_per_image_errors(app: Flask, factory: Factory, reviewer, shared_dataset: Path) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection("photos", categories=())
    photos = sorted((shared_dataset / "raccoon" / "images").glob("*.jpg"))[:3]
    files = [(io.BytesIO(p.read_bytes()), p.name) for p in photos] + [(io.BytesIO(b"this is not a jpeg"), "broken.jpg")]
    response = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", data={"files": files, "tag": "raccoon"}, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    job = wait_job(reviewer, response.get_json()["job"]["id"])
    assert job["status"] == "succeeded", job
    detail = reviewer.api("GET", f"/api/v1/collections/{cid}").get_json()
    assert detail["images"] == {"ok": 3, "failed": 1}
    assert [c["name"] for c in detail["categories"]] == ["raccoon"]
    failed = reviewer.api("GET", f"/api/v1/collections/{cid}/failed-images").get_json()["items"]
    assert failed[0]["rel_path"] == "raccoon/broken.jpg" and failed[0]["failure_reason"]
    page = reviewer.client.get(f"/collections/{cid}").get_data(as_text=True)
    assert "raccoon/broken.jpg" in page and 'id="import-errors"' in page
    images = reviewer.api("GET", f"/api/v1/collections/{cid}/images").get_json()["items"]
    assert sorted(i["rel_path"] for i in images) == sorted(f"raccoon/{p.name}" for p in photos)
    with reviewer.client.get(images[0]["thumb_url"]) as thumb:
        assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"


def test_zip_folder_layout_and_csv_manifest_uploads(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection("zipped", categories=())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("raccoon/images/r1.png", factory.png(40, 30, (10, 20, 30)))
        archive.writestr("kangaroo/k1.png", factory.png(40, 30, (40, 50, 60)))
        archive.writestr("notes.txt", b"not an image")
    buf.seek(0)
    response = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", data={"files": (buf, "photos.zip")}, content_type="multipart/form-data")
    assert response.status_code == 202
    assert wait_job(reviewer, response.get_json()["job"]["id"])["status"] == "succeeded"
    detail = reviewer.api("GET", f"/api/v1/collections/{cid}").get_json()
    assert sorted(c["name"] for c in detail["categories"]) == ["kangaroo", "raccoon"] and detail["images"]["ok"] == 2

    manifest = io.BytesIO(b"file_name,tags\na.png,cat;dog\nb.png,dog\n")
    files = [(io.BytesIO(factory.png(30, 30, (1, 2, 3))), "a.png"), (io.BytesIO(factory.png(30, 30, (4, 5, 6))), "b.png")]
    response = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", data={"files": files, "manifest": (manifest, "tags.csv")},
                            content_type="multipart/form-data")
    assert response.status_code == 202
    assert wait_job(reviewer, response.get_json()["job"]["id"])["status"] == "succeeded"
    detail = reviewer.api("GET", f"/api/v1/collections/{cid}").get_json()
    assert sorted(c["name"] for c in detail["categories"]) == ["cat", "dog", "kangaroo", "raccoon"] and detail["images"]["ok"] == 4
    page = reviewer.form(f"/collections/{cid}/upload", {"files": [(io.BytesIO(factory.png(20, 20, (9, 9, 9))), "c.png")], "tag": "bird"},
                         content_type="multipart/form-data", follow_redirects=True).get_data(as_text=True)
    assert "Uploaded 1 file(s); import job" in page
