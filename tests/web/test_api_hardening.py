"""Bad input and bad days on the API and pages: typed fields (400 naming the field, never 500,
on PostgreSQL), ground truth read-only, small JSON body limits, the form-parts limit, 401 for
token-less writes, a full disk (507) and a database that is down (503), no server paths in job
JSON, and collection names with control characters."""

from __future__ import annotations

import base64
import errno
import io
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.web.helpers import Browser, Factory, login, wait_job
from worker.staging import staging_root

HUGE = 10**30


@pytest.fixture
def pg_setup(migrated_pg_url: str, make_app: Callable[..., Flask]) -> tuple[Flask, Browser, Factory, int, dict[str, int]]:
    app = make_app(migrated_pg_url, migrate=False)
    factory = Factory(app)
    factory.user("r@example.com")
    cid, cats = factory.collection()
    return app, login(app.test_client(), "r@example.com"), factory, cid, cats


def _error(response: Any) -> dict[str, Any]:
    body = response.get_json()
    assert body is not None and "error" in body, response.get_data(as_text=True)[:300]
    return body["error"]


# -- typed validation (item: 500s on bad input) ------------------------------------------------------
@pytest.mark.postgres
def test_huge_ids_and_cursors_are_400_naming_the_field_on_postgres(pg_setup) -> None:  # type: ignore[no-untyped-def]
    app, browser, factory, cid, cats = pg_setup
    image_id = factory.image(cid)
    factory.box(image_id, cats["raccoon"])
    score_cursor = base64.urlsafe_b64encode(json.dumps([0.5, HUGE]).encode()).decode().rstrip("=")
    for url, field in [
        (f"/api/v1/collections/{cid}/images?category_id={HUGE}", "category_id"),
        (f"/api/v1/collections/{cid}/images?cursor={score_cursor}", "cursor"),
        (f"/api/v1/collections/{cid}/boxes?category_id={HUGE}", "category_id"),
        (f"/api/v1/collections/{cid}/boxes?cursor={HUGE}", "cursor"),
        (f"/api/v1/collections?cursor={HUGE}", "cursor"),
        (f"/api/v1/collections/{cid}/jobs?cursor={HUGE}", "cursor"),
        (f"/api/v1/collections/{cid}/boxes?min_score=nan", "min_score"),
        (f"/api/v1/collections?limit={HUGE}", "limit"),
    ]:
        response = browser.api("GET", url)
        assert response.status_code == 400, (url, response.status_code)
        assert field in _error(response)["message"], url
    no_objects = browser.api("POST", f"/api/v1/images/{image_id}/no-objects", {"versions": {str(HUGE): 1}})
    assert no_objects.status_code == 400 and _error(no_objects)["field"] == f"versions.{HUGE}"
    page = browser.form(f"/collections/{cid}/bulk-accept", {"category_id": str(HUGE), "min_score": "0.5"}, follow_redirects=True)
    assert page.status_code == 200 and "category_id" in page.get_data(as_text=True)
    for url in (f"/review/collections/{cid}?category_id={HUGE}", f"/review/collections/{cid}?cursor={score_cursor}",
                f"/review/collections/{cid}?goto={HUGE}", f"/review/collections/{cid}?page={HUGE}",
                f"/review/images/{image_id}?category_id={HUGE}"):
        page = browser.client.get(url)
        assert page.status_code == 400, (url, page.status_code)
    for url in (f"/api/v1/collections/{HUGE}", f"/api/v1/images/{HUGE}", f"/api/v1/jobs/{HUGE}", f"/review/images/{HUGE}"):
        assert browser.api("GET", url).status_code == 404, url
    assert browser.api("PATCH", f"/api/v1/boxes/{HUGE}", {"version": 1, "status": "accepted"}).status_code == 404


@pytest.mark.postgres
def test_box_fields_of_the_wrong_type_are_400_naming_the_field(pg_setup) -> None:  # type: ignore[no-untyped-def]
    app, browser, factory, cid, cats = pg_setup
    image_id = factory.image(cid)
    box_id = factory.box(image_id, cats["raccoon"])
    for bad in ("abc", None, [1], True, {"a": 1}):
        response = browser.api("PATCH", f"/api/v1/boxes/{box_id}", {"version": 1, "x1": bad})
        assert response.status_code == 400, (bad, response.status_code)
        assert _error(response)["field"] == "x1"
    for body, field in [({"version": "1", "status": "accepted"}, "version"), ({"version": 1, "category_id": HUGE}, "category_id"),
                        ({"version": 1, "status": ["accepted"]}, "status"), ({"version": HUGE, "status": "accepted"}, "version")]:
        response = browser.api("PATCH", f"/api/v1/boxes/{box_id}", body)
        assert response.status_code == 400, (body, response.status_code)
        assert _error(response)["field"] == field
    drawn = browser.api("POST", f"/api/v1/images/{image_id}/boxes", {"category_id": cats["raccoon"], "x1": 1, "y1": 1, "x2": "9", "y2": 9})
    assert drawn.status_code == 400 and _error(drawn)["field"] == "x2"
    accept = browser.api("POST", f"/api/v1/images/{image_id}/accept-all", {"versions": {"abc": 1}})
    assert accept.status_code == 400 and _error(accept)["field"] == "versions.abc"
    accept = browser.api("POST", f"/api/v1/images/{image_id}/accept-all", {"versions": {str(box_id): "x"}})
    assert accept.status_code == 400 and _error(accept)["field"] == f"versions.{box_id}"
    bulk = browser.api("POST", f"/api/v1/collections/{cid}/bulk-accept", {"category_id": HUGE, "min_score": 0.5})
    assert bulk.status_code == 400 and _error(bulk)["field"] == "category_id"
    preview = browser.api("GET", f"/api/v1/collections/{cid}/bulk-accept/preview?category_id={HUGE}&min_score=0.5")
    assert preview.status_code == 400 and "category_id" in _error(preview)["message"]
    job = browser.api("POST", f"/api/v1/collections/{cid}/jobs", {"kind": "train", "params": {"epochs": [3]}})
    assert job.status_code == 400 and _error(job)["field"] == "epochs"
    token = browser.api("POST", "/api/v1/tokens", {"name": ["x"]})
    assert token.status_code == 400 and _error(token)["field"] == "name"
    assert browser.api("DELETE", f"/api/v1/boxes/{box_id}?version={HUGE}").status_code == 400
    assert browser.api("GET", f"/api/v1/boxes/{box_id}").status_code in (404, 405)  # never a 500


def test_collection_names_with_control_characters_are_refused_by_api_page_and_cli(app: Flask, reviewer: Browser) -> None:
    for name in ("two\nlines", "c\rr", "tab\there", "nul\x00", "bell\x07", "zero\u200bwidth"):
        response = reviewer.api("POST", "/api/v1/collections", {"name": name})
        assert response.status_code == 400 and _error(response)["field"] == "name", name
    page = reviewer.form("/collections", {"name": "two\r\nlines"}, follow_redirects=True)
    assert "no control characters" in page.get_data(as_text=True)
    from web.cli.job_commands import collections_group

    result = app.test_cli_runner().invoke(collections_group, ["create", "made\r\nby cli"])
    assert result.exit_code != 0 and "control characters" in result.output
    assert reviewer.api("POST", "/api/v1/collections", {"name": "ok name-1.2"}).status_code == 201


def test_export_of_a_collection_whose_old_name_has_cr_lf_downloads(app: Flask, factory: Factory, reviewer: Browser) -> None:
    """Names made before the rule (the CLI took any text) still export."""
    cid, cats = factory.collection("made\r\nby cli")
    image_id = factory.image(cid)
    factory.box(image_id, cats["raccoon"], status="accepted")
    for fmt in ("coco", "yolo"):
        response = reviewer.client.get(f"/api/v1/collections/{cid}/export?format={fmt}")
        assert response.status_code == 200, (fmt, response.get_data(as_text=True)[:200])
        disposition = response.headers["Content-Disposition"]
        assert "\r" not in disposition and "\n" not in disposition and "made_by_cli" in disposition
        response.close()


# -- ground truth is read-only -------------------------------------------------------------------
@pytest.mark.postgres
def test_ground_truth_boxes_are_read_only_and_bulk_actions_skip_them(pg_setup) -> None:  # type: ignore[no-untyped-def]
    app, browser, factory, cid, cats = pg_setup
    image_id = factory.image(cid)
    gt = factory.box(image_id, cats["raccoon"], score=1.0, status="accepted", source="ground_truth")
    cam = factory.box(image_id, cats["raccoon"], score=0.8, xyxy=(2, 2, 20, 20))
    for body in ({"version": 1, "x1": 1, "y1": 1, "x2": 9, "y2": 9}, {"version": 1, "status": "rejected"},
                 {"version": 1, "status": "accepted"}, {"version": 1, "category_id": cats["kangaroo"]}):
        response = browser.api("PATCH", f"/api/v1/boxes/{gt}", body)
        assert response.status_code == 403, (body, response.status_code)
        assert _error(response)["code"] == "ground_truth_read_only"
    deleted = browser.api("DELETE", f"/api/v1/boxes/{gt}?version=1")
    assert deleted.status_code == 403 and _error(deleted)["code"] == "ground_truth_read_only"
    accepted = browser.api("POST", f"/api/v1/images/{image_id}/accept-all", {"versions": {str(gt): 1, str(cam): 1}})
    assert accepted.status_code == 200 and [b["id"] for b in accepted.get_json()["updated"]] == [cam]
    assert browser.api("POST", f"/api/v1/collections/{cid}/bulk-accept", {"category_id": cats["raccoon"], "min_score": 0}).status_code == 200
    selection = browser.api("POST", f"/api/v1/collections/{cid}/review-selection", {"image_ids": [image_id], "status": "rejected"})
    assert selection.status_code == 201
    from worker.store.models import Box

    row = factory.get(Box, gt)
    assert (row.status.value, row.version, row.x1, row.category_id) == ("accepted", 1, 4.0, cats["raccoon"])


# -- body limits ------------------------------------------------------------------------------------
class _EndlessBody(io.RawIOBase):
    """A request body of ``size`` bytes made on demand (nothing held in memory), counting what the
    server read of it; seekable only as far as the test client measures its length."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.read_bytes = 0
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = self.size if whence == 2 else offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.size - self._pos)
        buffer[:n] = b" " * n
        self._pos += n
        self.read_bytes += n
        return n


def test_a_200_mb_json_body_is_refused_with_413_before_it_is_read(app: Flask, reviewer: Browser) -> None:
    body = _EndlessBody(200 * 2**20)
    start = time.perf_counter()
    response = reviewer.client.post("/api/v1/tokens", input_stream=body, content_type="application/json",
                                    headers={"X-CSRFToken": reviewer.csrf, "Accept": "application/json"})
    assert response.status_code == 413
    assert "for this route" in _error(response)["message"]
    assert body.read_bytes == 0
    assert time.perf_counter() - start < 2.0


def test_a_body_without_length_is_cut_off_at_the_route_limit(app: Flask, reviewer: Browser) -> None:
    body = _EndlessBody(200 * 2**20)
    response = reviewer.client.post("/api/v1/tokens", input_stream=body, content_type="application/json",
                                    headers={"X-CSRFToken": reviewer.csrf, "Accept": "application/json"},
                                    environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""})  # chunked
    assert response.status_code == 413, (response.get_json(), body.read_bytes)
    assert body.read_bytes <= 2 * app.config["MAX_BODY_BYTES"]


def test_uploads_keep_their_large_limit(app: Flask, factory: Factory, reviewer: Browser) -> None:
    cid, _ = factory.collection()
    from werkzeug.datastructures import FileStorage, MultiDict
    from werkzeug.test import stream_encode_multipart

    big = factory.png(1200, 1200) + b"\0" * (2 * app.config["MAX_BODY_BYTES"])  # a valid PNG with trailing bytes, > 2 MiB
    body, length, boundary = stream_encode_multipart(MultiDict({"files": FileStorage(io.BytesIO(big), "big.png")}), use_tempfile=False)
    assert length > 2 * app.config["MAX_BODY_BYTES"]
    response = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", input_stream=body,
                            content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 202, response.get_json()
    wait_job(reviewer, response.get_json()["job"]["id"])


# -- clearer errors ---------------------------------------------------------------------------------
def test_more_files_than_form_parts_names_the_file_count_limit(app: Flask, factory: Factory, reviewer: Browser) -> None:
    cid, _ = factory.collection()
    files = [(io.BytesIO(b"x"), f"f{i}.png") for i in range(1001)]
    response = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", data={"files": files}, content_type="multipart/form-data")
    assert response.status_code == 413
    message = _error(response)["message"]
    assert "1000 files" in message and "MiB" not in message
    page = reviewer.form(f"/collections/{cid}/upload", {"files": files[:0] + [(io.BytesIO(b"x"), f"g{i}.png") for i in range(1001)]},
                         content_type="multipart/form-data", headers={"Accept": "text/html"})
    assert page.status_code == 413 and "1000 files" in page.get_data(as_text=True)


def test_api_writes_without_a_token_are_401_not_csrf(app: Flask, factory: Factory) -> None:
    cid, _ = factory.collection()
    client = app.test_client()
    for method, url in (("POST", "/api/v1/collections"), ("POST", f"/api/v1/collections/{cid}/jobs"), ("PATCH", "/api/v1/boxes/1"),
                        ("DELETE", "/api/v1/boxes/1?version=1"), ("POST", "/api/v1/tokens")):
        response = client.open(url, method=method, json={"name": "x"})
        assert response.status_code == 401, (method, url, response.status_code)
        assert _error(response)["code"] == "unauthorized"
    bad = client.post("/api/v1/collections", json={"name": "x"}, headers={"Authorization": "Bearer cl_nope"})
    assert bad.status_code == 401 and _error(bad)["code"] == "invalid_token"


def _staged(app: Flask) -> list[Path]:
    root = staging_root(app.extensions["camlabel"].settings.data_dir)
    return sorted(root.iterdir()) if root.is_dir() else []


def test_disk_full_during_upload_is_507_and_leaves_no_staging(app: Flask, factory: Factory, reviewer: Browser,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Files land on /dev/full, so the kernel answers ENOSPC as a full data volume does."""
    from werkzeug.datastructures import FileStorage

    def save_to_full_disk(self: FileStorage, dst: Any, buffer_size: int = 16384) -> None:
        with open("/dev/full", "wb") as full:
            shutil.copyfileobj(self.stream, full, buffer_size)
            full.flush()

    monkeypatch.setattr(FileStorage, "save", save_to_full_disk)
    cid, _ = factory.collection()
    response = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads", data={"files": [(io.BytesIO(factory.png()), "a.png")]},
                            content_type="multipart/form-data")
    assert response.status_code == 507, response.get_data(as_text=True)[:300]
    assert _error(response)["code"] == "insufficient_storage" and "storage is full" in _error(response)["message"]
    assert _staged(app) == []
    page = reviewer.form(f"/collections/{cid}/upload", {"files": [(io.BytesIO(factory.png()), "a.png")]},
                         content_type="multipart/form-data", headers={"Accept": "text/html"})
    assert page.status_code == 507 and "storage is full" in page.get_data(as_text=True)
    assert errno.ENOSPC  # the errno the handler maps


@pytest.mark.postgres
def test_database_down_during_upload_is_503(make_app: Callable[..., Flask], pg_url: str) -> None:
    """The database refuses connections (as when PostgreSQL is stopped): 503 with a message, no staging left."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from tests.conftest import PG_ADMIN_URL

    app = make_app(pg_url)
    factory = Factory(app)
    factory.user("r@example.com")
    cid, _ = factory.collection()
    browser = login(app.test_client(), "r@example.com")
    name = make_url(pg_url).database
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
        response = browser.api("POST", f"/api/v1/collections/{cid}/uploads", data={"files": [(io.BytesIO(factory.png()), "a.png")]},
                               content_type="multipart/form-data")
        assert response.status_code == 503, response.get_data(as_text=True)[:300]
        assert _error(response)["code"] == "database_unavailable" and response.headers["Retry-After"]
        page = browser.client.get(f"/collections/{cid}", headers={"Accept": "text/html"})
        assert page.status_code == 503 and "database is unavailable" in page.get_data(as_text=True)
        assert _staged(app) == []
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
        app.extensions["camlabel"].engine.dispose()
    assert browser.api("GET", f"/api/v1/collections/{cid}").status_code == 200  # back once the database is


# -- no server paths ------------------------------------------------------------------------------
def test_job_json_shows_no_server_paths(app: Flask, factory: Factory, reviewer: Browser) -> None:
    cid, _ = factory.collection()
    data_dir = str(app.extensions["camlabel"].settings.data_dir)
    manifest = io.BytesIO(b"file_name,tags\na.png,raccoon\n")
    response = reviewer.api("POST", f"/api/v1/collections/{cid}/uploads",
                            data={"files": [(io.BytesIO(factory.png()), "a.png")], "manifest": (manifest, "m.csv")},
                            content_type="multipart/form-data")
    assert response.status_code == 202
    job = response.get_json()["job"]
    wait_job(reviewer, job["id"])
    from worker.store.models import Job, JobKind, JobStatus

    with factory.session() as s:
        failed = Job(collection_id=cid, kind=JobKind.import_, status=JobStatus.failed, params={"path": "/srv/import/photos"},
                     error=f"cannot read {data_dir}/staging/abc123/files/000001.png: truncated; see /var/tmp/x/y.log", done=0)
        s.add(failed)
        s.commit()
        failed_id = failed.id
    for body in (reviewer.api("GET", f"/api/v1/jobs/{job['id']}").get_json(), reviewer.api("GET", f"/api/v1/collections/{cid}/jobs").get_json(),
                 reviewer.api("GET", f"/api/v1/jobs/{failed_id}").get_json(), response.get_json()):
        text = json.dumps(body)
        assert data_dir not in text and "/staging/" not in text and "/srv/" not in text and "/var/tmp" not in text, text
    shown = reviewer.api("GET", f"/api/v1/jobs/{job['id']}").get_json()["params"]
    assert shown["source"] == "upload" and shown["manifest"] is True
    assert "000001.png" in reviewer.api("GET", f"/api/v1/jobs/{failed_id}").get_json()["error"]
    page = reviewer.client.get(f"/collections/{cid}").get_data(as_text=True)
    assert data_dir not in page and "/var/tmp" not in page
