"""Uploads keep the user's own file names (unicode, spaces, folders) so manifest rows match, and
an import that leaves files out says which and why, in its result and on the dashboard."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.datastructures import FileStorage

from tests.web.helpers import Factory, wait_job
from web.services.errors import Invalid
from web.services.uploads import stage_upload

NAMES = ["my photo.png", "熊猫.png", "Ünïcode.png", "plain.png"]


def _upload(reviewer, cid: int, files: list[tuple[bytes, str]], manifest: str | None = None, **form: str):  # type: ignore[no-untyped-def]
    data: dict = {"files": [(io.BytesIO(body), name) for body, name in files], **form}
    if manifest is not None:
        data["manifest"] = (io.BytesIO(manifest.encode("utf-8")), "tags.csv")
    return reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", data=data, content_type="multipart/form-data")


def _images(reviewer, cid: int) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(i["rel_path"] for i in reviewer.api("GET", f"/api/v1/collections/{cid}/images").get_json()["items"])


def test_manifest_matches_unicode_and_spaced_names(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection("names", categories=())
    files = [(factory.png(30, 20, (10 * i, 5, 5)), name) for i, name in enumerate(NAMES)]
    manifest = "file_name,tags\n" + "".join(f"{name},{'panda' if i == 1 else 'thing'}\n" for i, name in enumerate(NAMES))
    response = _upload(reviewer, cid, files, manifest)
    assert response.status_code == 202, response.get_json()
    job = wait_job(reviewer, response.get_json()["job"]["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["imported"] == 4 and job["result"]["missing"] == 0 and job["result"]["skipped"] == []
    assert job["result"]["summary"] == "imported 4 of 4"
    assert _images(reviewer, cid) == sorted(NAMES)
    detail = reviewer.api("GET", f"/api/v1/collections/{cid}").get_json()
    assert sorted(c["name"] for c in detail["categories"]) == ["panda", "thing"]


def test_manifest_with_folder_paths_matches_folder_uploads(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection("folders", categories=())
    files = [(factory.png(24, 24, (1, 2, 3)), "imgs/m0.png"), (factory.png(24, 24, (4, 5, 6)), "imgs/sub dir/m1.png")]
    response = _upload(reviewer, cid, files, "file_name,tags\nimgs/m0.png,owl\nimgs/sub dir/m1.png,owl;bird\n")
    job = wait_job(reviewer, response.get_json()["job"]["id"])
    assert job["status"] == "succeeded" and job["result"]["imported"] == 2, job
    assert _images(reviewer, cid) == ["imgs/m0.png", "imgs/sub dir/m1.png"]


def test_skipped_files_are_reported_in_the_job_and_on_the_dashboard(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection("partial", categories=())
    manifest = "file_name,tags\n" + "".join(f"{name},thing\n" for name in NAMES)
    response = _upload(reviewer, cid, [(factory.png(20, 20, (9, 9, 9)), "plain.png")], manifest)
    job = wait_job(reviewer, response.get_json()["job"]["id"])
    assert job["status"] == "succeeded" and job["result"]["imported"] == 1
    assert job["result"]["skipped_count"] == 3
    assert {s["file"] for s in job["result"]["skipped"]} == set(NAMES) - {"plain.png"}
    assert all("listed in the manifest but not found" in s["reason"] for s in job["result"]["skipped"])
    assert job["result"]["summary"].startswith("imported 1 of 4, 3 skipped (3 listed in the manifest but not found")
    page = reviewer.client.get(f"/collections/{cid}").get_data(as_text=True)
    assert "imported 1 of 4, 3 skipped" in page


def test_an_upload_that_imports_nothing_fails_with_the_reason(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection("nothing", categories=())
    response = _upload(reviewer, cid, [(factory.png(20, 20, (9, 9, 9)), "m0.png")], "file_name,tags\nimgs/m0.png,owl\n")
    job = wait_job(reviewer, response.get_json()["job"]["id"])
    assert job["status"] == "failed", job
    assert "nothing could be imported: imported 0 of 2" in job["error"]
    assert "uploaded but not listed in the manifest" in job["error"] and "listed in the manifest but not found" in job["error"]


def test_bad_and_repeated_names_are_refused_with_400(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection("refused", categories=())
    png = factory.png(10, 10)
    escape = _upload(reviewer, cid, [(png, "../evil.png")])
    assert escape.status_code == 400 and escape.get_json()["error"]["code"] == "bad_file_name"
    twice = _upload(reviewer, cid, [(png, "a.png"), (png, "a.png")])
    assert twice.status_code == 400 and "both named 'a.png'" in twice.get_json()["error"]["message"]
    staging = app.extensions["camlabel"].settings.data_dir / "staging"
    assert not staging.exists() or not any(staging.iterdir())


def test_zip_of_many_mid_size_entries_is_refused_at_upload(tmp_path: Path) -> None:
    """40 entries of 1 MiB of zeros (the importer's test takes the full 1500)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(40):
            archive.writestr(f"owl/{i:04d}.jpg", b"\0" * (1 << 20))
    assert len(buf.getvalue()) < 100_000
    buf.seek(0)
    with pytest.raises(Invalid) as refused:
        stage_upload(tmp_path, [FileStorage(buf, filename="many.zip")], tag=None, manifest=None)
    assert refused.value.code == "bad_zip" and "zip bomb" in refused.value.message
    assert not any((tmp_path / "staging").iterdir())
