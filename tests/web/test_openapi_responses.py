"""Real responses of every documented route validated against the OpenAPI document's schemas
(OpenAPI 3.0 validator): success bodies with their documented schema, error bodies with
``Error``; and the API's infer takes ``imagenet`` as the CLI does. (SQLite: the upload and job
routes start jobs on the embedded worker.)"""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask import Flask
from openapi_schema_validator import OAS30Validator

from tests.web.helpers import Factory, login, wait_job


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> OAS30Validator:
    """A validator of ``schema`` whose ``#/components/...`` references resolve in ``doc``."""
    return OAS30Validator({**schema, "components": doc["components"]})


def _check(doc: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    """``body`` matches the schema the document gives for ``status`` of ``method path``."""
    operation = doc["paths"][path][method]
    response = operation["responses"].get(str(status))
    assert response is not None, f"{method.upper()} {path} answered {status}, which the document does not list"
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    content = response.get("content", {}).get("application/json")
    if content is None:
        assert body is None, f"{method.upper()} {path} {status}: the document says no JSON body"
        return
    errors = sorted(_validator(doc, content["schema"]).iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"{method.upper()} {path} {status}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def test_every_documented_route_answers_what_the_document_says(app: Flask) -> None:
    factory = Factory(app)
    factory.user("admin@example.com", admin=True)
    browser = login(app.test_client(), "admin@example.com")
    doc = browser.client.get("/api/v1/openapi.json").get_json()
    cid, cats = factory.collection()
    image_id = factory.image(cid, "raccoon/a.png")
    box_id = factory.box(image_id, cats["raccoon"], score=0.9)
    other_box = factory.box(image_id, cats["raccoon"], score=0.3, xyxy=(5, 5, 20, 20))
    map_key = factory.concept_map(image_id, cats["raccoon"], with_png=True)
    from worker.store.models import Evaluation

    with factory.session() as s:
        s.add(Evaluation(collection_id=cid, model_version_id=None, job_id=None, box_status="all", metrics={"corloc": 0.5}))
        s.commit()

    called: set[tuple[str, str]] = set()

    def call(method: str, path: str, url: str, json: Any = None, expect: int | None = None, **kwargs: Any) -> Any:
        response = browser.api(method.upper(), "/api/v1" + url, json, **kwargs)
        body = response.get_json(silent=True) if response.status_code != 204 else None
        response.close()
        if expect is not None:
            assert response.status_code == expect, (method, url, response.status_code, body)
        if response.mimetype == "application/json" or body is None:
            _check(doc, method, path, response.status_code, body)
        called.add((method, path))
        return body

    upload = call("post", "/collections/{collection_id}/uploads", f"/collections/{cid}/uploads", expect=202,
                  data={"files": [(io.BytesIO(factory.png()), "b.png")], "tag": "raccoon"}, content_type="multipart/form-data")
    assert upload["files"] == 1 and upload["job"]["kind"] == "import"
    wait_job(browser, upload["job"]["id"])
    call("get", "/collections", "/collections", expect=200)
    made = call("post", "/collections", "/collections", {"name": "second"}, expect=201)
    call("get", "/collections/{collection_id}", f"/collections/{cid}", expect=200)
    call("get", "/collections/{collection_id}/export", f"/collections/{cid}/export?format=coco&status=all", expect=200)
    call("get", "/collections/{collection_id}/evaluations", f"/collections/{cid}/evaluations", expect=200)
    call("get", "/collections/{collection_id}/failed-images", f"/collections/{cid}/failed-images", expect=200)
    images = call("get", "/collections/{collection_id}/images", f"/collections/{cid}/images?limit=1", expect=200)
    assert images["items"] and images["next_cursor"]
    call("get", "/collections/{collection_id}/boxes", f"/collections/{cid}/boxes", expect=200)
    call("get", "/images/{image_id}", f"/images/{image_id}", expect=200)
    call("get", "/maps/{key}", f"/maps/{map_key}", expect=200)
    drawn = call("post", "/images/{image_id}/boxes", f"/images/{image_id}/boxes",
                 {"category_id": cats["kangaroo"], "x1": 1, "y1": 2, "x2": 30, "y2": 40}, expect=201)
    call("patch", "/boxes/{box_id}", f"/boxes/{box_id}", {"version": 1, "status": "rejected"}, expect=200)
    call("post", "/images/{image_id}/accept-all", f"/images/{image_id}/accept-all", {"versions": {str(other_box): 1}}, expect=200)
    call("post", "/collections/{collection_id}/bulk-accept", f"/collections/{cid}/bulk-accept",
         {"category_id": cats["raccoon"], "min_score": 0.1}, expect=200)
    call("delete", "/boxes/{box_id}", f"/boxes/{drawn['id']}?version={drawn['version']}", expect=204)
    call("get", "/collections/{collection_id}/review-stats", f"/collections/{cid}/review-stats", expect=200)
    call("get", "/collections/{collection_id}/image-count", f"/collections/{cid}/image-count?review=unreviewed&sort=-score", expect=200)
    call("get", "/collections/{collection_id}/bulk-accept/preview",
         f"/collections/{cid}/bulk-accept/preview?category_id={cats['raccoon']}&min_score=0", expect=200)
    operation = call("post", "/collections/{collection_id}/review-selection", f"/collections/{cid}/review-selection",
                     {"image_ids": [image_id], "status": "rejected"}, expect=201)
    call("post", "/collections/{collection_id}/review-operations/{operation_id}/undo",
         f"/collections/{cid}/review-operations/{operation['operation_id']}/undo", expect=200)
    call("post", "/images/{image_id}/no-objects", f"/images/{image_id}/no-objects", {}, expect=200)
    call("delete", "/images/{image_id}/no-objects", f"/images/{image_id}/no-objects", expect=200)
    coco = b'{"images": [{"id": 1, "file_name": "raccoon/a.png", "width": 64, "height": 48}], "categories": [{"id": 1, "name": "raccoon"}], ' \
        b'"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}]}'
    report = call("post", "/collections/{collection_id}/ground-truth", f"/collections/{cid}/ground-truth", expect=200,
                  data={"format": "coco", "file": (io.BytesIO(coco), "gt.json")}, content_type="multipart/form-data")
    assert report["images_matched"] == 1 and report["boxes_imported"] == 1
    job = call("post", "/collections/{collection_id}/jobs", f"/collections/{cid}/jobs", {"kind": "export", "params": {"format": "coco"}},
               expect=202)
    call("get", "/collections/{collection_id}/jobs", f"/collections/{cid}/jobs", expect=200)
    call("get", "/jobs/{job_id}", f"/jobs/{job['id']}", expect=200)
    call("post", "/jobs/{job_id}/cancel", f"/jobs/{job['id']}/cancel", expect=200)
    wait_job(browser, job["id"])
    exported = call("post", "/collections/{collection_id}/jobs", f"/collections/{cid}/jobs", {"kind": "export", "params": {"format": "coco"}},
                    expect=202)
    wait_job(browser, exported["id"])
    call("get", "/jobs/{job_id}/download", f"/jobs/{exported['id']}/download", expect=200)
    call("get", "/models", "/models", expect=200)
    call("get", "/me", "/me", expect=200)
    token = call("post", "/tokens", "/tokens", {"name": "ci"}, expect=201)
    call("get", "/tokens", "/tokens", expect=200)
    call("delete", "/tokens/{token_id}", f"/tokens/{token['id']}", expect=204)
    call("get", "/users", "/users", expect=200)
    call("post", "/users", "/users", {"email": "new@example.com", "password": "long enough pw"}, expect=201)
    call("get", "/openapi.json", "/openapi.json", expect=200)
    call("delete", "/collections/{collection_id}", f"/collections/{made['id']}", expect=204)
    call("post", "/me/password", "/me/password", {"current_password": "correct horse battery", "new_password": "a new long one"},
         expect=204)
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert called == documented, f"not exercised: {sorted(documented - called)}"

    # error bodies follow the Error schema, with the field named where one is at fault
    again = login(app.test_client(), "admin@example.com", "a new long one")
    for method, path, url, json in [
        ("get", "/jobs/{job_id}", "/jobs/999999", None),
        ("patch", "/boxes/{box_id}", f"/boxes/{box_id}", {"version": 2, "x1": "abc"}),
        ("post", "/collections", "/collections", {"name": "two\nlines"}),
    ]:
        response = again.api(method.upper(), "/api/v1" + url, json)
        assert response.status_code in (400, 404)
        _check(doc, method, path, response.status_code, response.get_json())


def test_upload_response_schema_is_not_a_bare_job(app: Flask) -> None:
    """The document said the upload answers a Job; the body is ``{"job": Job, "files": n}``."""
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    schema = doc["paths"]["/collections/{collection_id}/uploads"]["post"]["responses"]["202"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Upload"}
    assert set(doc["components"]["schemas"]["Upload"]["required"]) == {"job", "files"}


@pytest.mark.slow  # builds the ImageNet classifier (~40 s on 2 cores)
def test_api_infer_accepts_imagenet_like_the_cli(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection()
    factory.image(cid, "raccoon/a.png")  # an infer job on an empty collection is refused before it starts
    started = reviewer.api("POST", f"/api/v1/collections/{cid}/jobs", {"kind": "infer", "params": {"model_version_id": "imagenet"}})
    assert started.status_code == 202, started.get_json()
    assert started.get_json()["params"] == {"model_version_id": "imagenet"}
    job = wait_job(reviewer, started.get_json()["id"], timeout_s=300)
    assert job["status"] == "succeeded", job
    from worker.store.models import ModelVersion

    assert factory.get(ModelVersion, job["result"]["model_version_id"]).name.startswith("imagenet")
    bad = reviewer.api("POST", f"/api/v1/collections/{cid}/jobs", {"kind": "infer", "params": {"model_version_id": "imagenet:vgg"}})
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "model_version_id"
