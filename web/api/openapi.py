"""The OpenAPI 3.0 document of ``/api/v1`` (served at ``/api/v1/openapi.json``, no login needed).

``ENDPOINTS`` lists every route; ``tests/web/test_openapi.py`` checks it against the URL map.
"""

from __future__ import annotations

from typing import Any

from web.api import bp

_ERR = {"$ref": "#/components/responses/Error"}
_PAGE_PARAMS = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
    {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "next_cursor of the previous page"},
]
_IMAGE_FILTERS = [
    {"name": "category_id", "in": "query", "schema": {"type": "integer"}},
    {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["proposed", "accepted", "rejected", "edited"]}},
    {"name": "min_score", "in": "query", "schema": {"type": "number"}},
    {"name": "max_score", "in": "query", "schema": {"type": "number"}},
    {"name": "no_box", "in": "query", "schema": {"type": "boolean"}},
    {"name": "sort", "in": "query", "schema": {"type": "string", "enum": ["score", "id"], "default": "score"}},
]


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


_BOX_EDIT = _obj(version={"type": "integer"}, status={"type": "string"}, category_id={"type": "integer"},
                 x1={"type": "number"}, y1={"type": "number"}, x2={"type": "number"}, y2={"type": "number"})
_BOX_EDIT["required"] = ["version"]

# (method, path, summary, schema of response, extra parameters, request body schema or "multipart", success status)
ENDPOINTS: list[tuple[str, str, str, str, list[dict[str, Any]], Any, str]] = [
    ("get", "/collections", "List collections", "CollectionPage", _PAGE_PARAMS, None, "200"),
    ("post", "/collections", "Create a collection", "Collection", [], _obj(name={"type": "string"}), "201"),
    ("get", "/collections/{collection_id}", "A collection with categories and image counts", "Collection", [], None, "200"),
    ("delete", "/collections/{collection_id}", "Delete a collection (admin)", None, [], None, "204"),
    ("post", "/collections/{collection_id}/uploads", "Upload images or a .zip (optional tag, CSV manifest) and start an import job", "Job", [], "multipart", "202"),
    ("get", "/collections/{collection_id}/export", "Download an export (format coco|coco-results|yolo|voc, status accepted|all)", None,
     [{"name": "format", "in": "query", "schema": {"type": "string", "default": "coco"}},
      {"name": "status", "in": "query", "schema": {"type": "string", "default": "accepted"}}], None, "200"),
    ("get", "/collections/{collection_id}/evaluations", "Evaluation results, newest first", "Page", _PAGE_PARAMS, None, "200"),
    ("get", "/collections/{collection_id}/failed-images", "Images an import could not read, with reasons", "ImagePage", _PAGE_PARAMS, None, "200"),
    ("get", "/collections/{collection_id}/images", "Images filtered and sorted like the review grid", "ImagePage", _PAGE_PARAMS + _IMAGE_FILTERS, None, "200"),
    ("get", "/collections/{collection_id}/boxes", "Boxes of a collection by id", "BoxPage",
     _PAGE_PARAMS + [p for p in _IMAGE_FILTERS if p["name"] in ("category_id", "status", "min_score", "max_score")]
     + [{"name": "source", "in": "query", "schema": {"type": "string", "enum": ["cam", "human", "ground_truth"]}}], None, "200"),
    ("post", "/collections/{collection_id}/bulk-accept", "Accept proposed boxes of a category scoring at least min_score", "Object",
     [], _obj(category_id={"type": "integer"}, min_score={"type": "number"}), "200"),
    ("get", "/collections/{collection_id}/jobs", "Jobs of a collection, newest first", "JobPage", _PAGE_PARAMS, None, "200"),
    ("post", "/collections/{collection_id}/jobs", "Start a train, infer, export, evaluate or calibrate job", "Job", [],
     _obj(kind={"type": "string", "enum": ["train", "infer", "export", "evaluate", "calibrate"]}, params={"type": "object"}), "202"),
    ("get", "/images/{image_id}", "An image with its boxes and concept-map overlays", "Image", [], None, "200"),
    ("post", "/images/{image_id}/boxes", "Draw a box (source human, accepted)", "Box", [],
     _obj(category_id={"type": "integer"}, x1={"type": "number"}, y1={"type": "number"}, x2={"type": "number"}, y2={"type": "number"}), "201"),
    ("post", "/images/{image_id}/accept-all", "Accept all proposed boxes of an image", "Object", [], _obj(versions={"type": "object"}), "200"),
    ("patch", "/boxes/{box_id}", "Edit a box (status, category, geometry) at its version; 409 when stale", "Box", [], _BOX_EDIT, "200"),
    ("delete", "/boxes/{box_id}", "Delete a box at its version; 409 when stale", None,
     [{"name": "version", "in": "query", "required": True, "schema": {"type": "integer"}}], None, "204"),
    ("get", "/jobs/{job_id}", "A job with progress (done/total), status and error", "Job", [], None, "200"),
    ("post", "/jobs/{job_id}/cancel", "Cancel a job (queued: revoked; running: stops at its next chunk)", "Job", [], None, "200"),
    ("get", "/jobs/{job_id}/download", "An export job's file, named <collection>-<format>-<YYYYMMDD>.<ext>", None, [], None, "200"),
    ("post", "/images/{image_id}/no-objects", "Mark an image 'no objects' (a reviewed negative; its boxes are rejected)", None, [],
     _obj(versions={"type": "object", "description": "{box_id: version} of the boxes you saw; a moved box is a 409"}), "200"),
    ("delete", "/images/{image_id}/no-objects", "Take back the 'no objects' mark (the image stays reviewed)", None, [], None, "200"),
    ("get", "/models", "Model versions infer can apply", "Page", _PAGE_PARAMS, None, "200"),
    ("get", "/me", "The signed-in user", "Object", [], None, "200"),
    ("get", "/tokens", "Your API tokens", "Page", _PAGE_PARAMS, None, "200"),
    ("post", "/tokens", "Create an API token (the secret is returned once)", "Object", [], _obj(name={"type": "string"}), "201"),
    ("delete", "/tokens/{token_id}", "Revoke an API token", None, [], None, "204"),
    ("get", "/users", "Users (admin)", "Page", _PAGE_PARAMS, None, "200"),
    ("post", "/users", "Create a user (admin)", "Object", [],
     _obj(email={"type": "string"}, password={"type": "string"}, admin={"type": "boolean"}), "201"),
    ("get", "/openapi.json", "This document", "Object", [], None, "200"),
]


def _schemas() -> dict[str, Any]:
    page = lambda item: _obj(items={"type": "array", "items": item}, next_cursor={"type": "string", "nullable": True})  # noqa: E731
    box = _obj(id={"type": "integer"}, image_id={"type": "integer"}, category_id={"type": "integer"}, x1={"type": "number"},
               y1={"type": "number"}, x2={"type": "number"}, y2={"type": "number"}, score={"type": "number", "nullable": True},
               source={"type": "string"}, status={"type": "string"}, version={"type": "integer"})
    job = _obj(id={"type": "integer"}, kind={"type": "string"}, status={"type": "string"}, done={"type": "integer"},
               total={"type": "integer", "nullable": True}, error={"type": "string", "nullable": True})
    image = _obj(id={"type": "integer"}, rel_path={"type": "string"}, width={"type": "integer"}, height={"type": "integer"},
                 n_boxes={"type": "integer"}, min_score={"type": "number", "nullable": True}, boxes={"type": "array", "items": box})
    collection = _obj(id={"type": "integer"}, name={"type": "string"}, categories={"type": "array", "items": _obj(id={"type": "integer"}, name={"type": "string"})})
    return {
        "Box": box, "Job": job, "Image": image, "Collection": collection, "Object": {"type": "object"},
        "Page": page({"type": "object"}), "BoxPage": page(box), "JobPage": page(job), "ImagePage": page(image), "CollectionPage": page(collection),
        "Error": _obj(error=_obj(code={"type": "string"}, message={"type": "string"})),
    }


def build_document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, summary, schema, params, body, ok in ENDPOINTS:
        path_params = [{"name": seg[1:-1], "in": "path", "required": True, "schema": {"type": "integer"}}
                       for seg in path.split("/") if seg.startswith("{")]
        op: dict[str, Any] = {"summary": summary, "parameters": path_params + params, "responses": {
            ok: {"description": "success", **({"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}} if schema else {})},
            "400": _ERR, "401": _ERR, "403": _ERR, "404": _ERR, "409": _ERR, "413": _ERR,
        }}
        if path == "/openapi.json":
            op["security"] = []
        if body == "multipart":
            op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": _obj(
                files={"type": "array", "items": {"type": "string", "format": "binary"}}, tag={"type": "string"},
                manifest={"type": "string", "format": "binary"})}}}
        elif body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "camlabel API", "version": "1", "description": "Weakly-supervised localization labeling: collections, jobs, review."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerAuth": []}, {"cookieAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"},
                                "cookieAuth": {"type": "apiKey", "in": "cookie", "name": "session"}},
            "schemas": _schemas(),
            "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
        },
    }


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    return build_document()
