"""The OpenAPI 3.0 document of ``/api/v1`` (served at ``/api/v1/openapi.json``, no login needed).

``ENDPOINTS`` lists every route; ``tests/web/test_openapi.py`` checks it against the URL map and
validates real responses of every route (success and error bodies) against these schemas.
"""

from __future__ import annotations

from typing import Any

from web.api import bp
from worker.formats import BOX_STATUSES, EXPORT_FORMATS

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
    {"name": "review", "in": "query", "schema": {"type": "string", "enum": ["unreviewed", "reviewed", "no_objects"]},
     "description": "the image's review state (unreviewed: the 'to review' queue)"},
    {"name": "disagree", "in": "query", "schema": {"type": "boolean"},
     "description": "tagged images with a box of an untagged class, or a tag with no box"},
    {"name": "sort", "in": "query", "schema": {"type": "string", "enum": ["score", "-score", "id"], "default": "score"},
     "description": "score: lowest box score first; -score: highest first; id: import order"},
]


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


_BOX_EDIT = _obj(version={"type": "integer"}, status={"type": "string"}, category_id={"type": "integer"},
                 x1={"type": "number"}, y1={"type": "number"}, x2={"type": "number"}, y2={"type": "number"})
_BOX_EDIT["required"] = ["version"]

# (method, path, summary, schema of the success response, extra parameters, request body schema or "multipart", success status)
ENDPOINTS: list[tuple[str, str, str, str | None, list[dict[str, Any]], Any, str]] = [
    ("get", "/collections", "List collections", "CollectionPage", _PAGE_PARAMS, None, "200"),
    ("post", "/collections", "Create a collection", "Collection", [], _obj(name={"type": "string"}), "201"),
    ("get", "/collections/{collection_id}", "A collection with categories and image counts", "Collection", [], None, "200"),
    ("delete", "/collections/{collection_id}", "Delete a collection (admin)", None, [], None, "204"),
    ("post", "/collections/{collection_id}/uploads", "Upload images or a .zip (optional tag, CSV manifest) and start an import job",
     "Upload", [], "multipart", "202"),
    ("get", "/collections/{collection_id}/export",
     f"Download an export (format {'|'.join(EXPORT_FORMATS)}, status {'|'.join(BOX_STATUSES)})", "ExportFile",
     [{"name": "format", "in": "query", "schema": {"type": "string", "enum": list(EXPORT_FORMATS), "default": "coco"}},
      {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(BOX_STATUSES), "default": "accepted"}},
      {"name": "include_unreviewed", "in": "query", "schema": {"type": "boolean", "default": False},
       "description": "also images nobody reviewed (by default only reviewed images are exported)"},
      {"name": "val_fraction", "in": "query", "schema": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0},
       "description": "yolo/voc: share of the images held out for validation"},
      {"name": "seed", "in": "query", "schema": {"type": "integer", "default": 0}, "description": "seed of the train/val draw"}], None, "200"),
    ("get", "/collections/{collection_id}/evaluations", "Evaluation results, newest first", "EvaluationPage", _PAGE_PARAMS, None, "200"),
    ("get", "/collections/{collection_id}/failed-images", "Images an import could not read, with reasons", "ImagePage", _PAGE_PARAMS, None, "200"),
    ("get", "/collections/{collection_id}/images", "Images filtered and sorted like the review grid", "ImagePage", _PAGE_PARAMS + _IMAGE_FILTERS, None, "200"),
    ("get", "/collections/{collection_id}/boxes", "Boxes of a collection by id", "BoxPage",
     _PAGE_PARAMS + [p for p in _IMAGE_FILTERS if p["name"] in ("category_id", "status", "min_score", "max_score")]
     + [{"name": "source", "in": "query", "schema": {"type": "string", "enum": ["cam", "human", "ground_truth"]}}], None, "200"),
    ("post", "/collections/{collection_id}/bulk-accept", "Accept proposed boxes of a category scoring at least min_score", "BulkAccept",
     [], _obj(category_id={"type": "integer"}, min_score={"type": "number"}), "200"),
    ("get", "/collections/{collection_id}/jobs", "Jobs of a collection, newest first", "JobPage", _PAGE_PARAMS, None, "200"),
    ("post", "/collections/{collection_id}/jobs", "Start a train, infer, export, evaluate or calibrate job", "Job", [],
     _obj(kind={"type": "string", "enum": ["train", "infer", "export", "evaluate", "calibrate"]}, params={
         "type": "object", "description": "train: arch, mode (linear|finetune), epochs; infer: model_version_id (an id, 'imagenet' "
         "or 'imagenet:<arch>'); export: format, status; evaluate: box_status; calibrate: model_version_id"}), "202"),
    ("get", "/images/{image_id}", "An image with its boxes and concept maps", "Image", [], None, "200"),
    ("get", "/maps/{key}", "A concept map's values for painting a heatmap (key: a concept map's map_url path)", "MapValues", [], None,
     "200"),
    ("post", "/images/{image_id}/boxes", "Draw a box (source human, accepted)", "Box", [],
     _obj(category_id={"type": "integer"}, x1={"type": "number"}, y1={"type": "number"}, x2={"type": "number"}, y2={"type": "number"}), "201"),
    ("post", "/images/{image_id}/accept-all", "Accept all proposed boxes of an image", "AcceptAll", [], _obj(versions={"type": "object"}), "200"),
    ("patch", "/boxes/{box_id}", "Edit a box (status, category, geometry) at its version; 409 when stale", "Box", [], _BOX_EDIT, "200"),
    ("delete", "/boxes/{box_id}", "Delete a box at its version; 409 when stale", None,
     [{"name": "version", "in": "query", "required": True, "schema": {"type": "integer"}}], None, "204"),
    ("get", "/jobs/{job_id}", "A job with progress (done/total), status and error", "Job", [], None, "200"),
    ("post", "/jobs/{job_id}/cancel", "Cancel a job (queued: revoked; running: stops at its next chunk)", "Job", [], None, "200"),
    ("post", "/collections/{collection_id}/ground-truth", "Import ground truth (multipart file + format coco|voc|yolo); the import report",
     "GroundTruthReport", [], "multipart", "200"),
    ("get", "/jobs/{job_id}/download", "An export job's file, named <collection>-<format>-<YYYYMMDD>.<ext>", "ExportFile", [], None, "200"),
    ("post", "/images/{image_id}/no-objects", "Mark an image 'no objects' (a reviewed negative; its boxes are rejected)", "NoObjects", [],
     _obj(versions={"type": "object", "description": "{box_id: version} of the boxes you saw; a moved box is a 409"}), "200"),
    ("delete", "/images/{image_id}/no-objects", "Take back the 'no objects' mark (the image stays reviewed)", "NoObjects", [], None, "200"),
    ("get", "/collections/{collection_id}/review-stats", "Review progress and per-class box counts by status", "ReviewStats",
     [{"name": "classes", "in": "query", "schema": {"type": "boolean", "default": True}, "description": "false: image counts only"}],
     None, "200"),
    ("get", "/collections/{collection_id}/image-count", "How many images match the review grid's filters (counted up to a cap)",
     "ImageCount", _IMAGE_FILTERS, None, "200"),
    ("get", "/collections/{collection_id}/bulk-accept/preview", "What a bulk accept would accept, with sample images", "BulkAcceptPreview",
     [{"name": "category_id", "in": "query", "required": True, "schema": {"type": "integer"}},
      {"name": "min_score", "in": "query", "required": True, "schema": {"type": "number"}}], None, "200"),
    ("post", "/collections/{collection_id}/review-selection", "Accept or reject the proposed boxes of selected images (one undoable operation)",
     "Operation", [], _obj(image_ids={"type": "array", "items": {"type": "integer"}},
                           status={"type": "string", "enum": ["accepted", "rejected"]}), "201"),
    ("post", "/collections/{collection_id}/review-operations/{operation_id}/undo", "Undo a bulk write (boxes edited since are skipped)",
     "Undo", [], None, "200"),
    ("get", "/models", "Model versions infer can apply", "ModelPage", _PAGE_PARAMS, None, "200"),
    ("get", "/me", "The signed-in user", "Me", [], None, "200"),
    ("post", "/me/password", "Change your password (ends every session of yours)", None, [],
     _obj(current_password={"type": "string"}, new_password={"type": "string", "minLength": 8}), "204"),
    ("get", "/tokens", "Your API tokens", "TokenPage", _PAGE_PARAMS, None, "200"),
    ("post", "/tokens", "Create an API token (the secret is returned once)", "TokenCreated", [], _obj(name={"type": "string"}), "201"),
    ("delete", "/tokens/{token_id}", "Revoke an API token", None, [], None, "204"),
    ("get", "/users", "Users (admin)", "UserPage", _PAGE_PARAMS, None, "200"),
    ("post", "/users", "Create a user (admin)", "User", [],
     _obj(email={"type": "string"}, password={"type": "string"}, admin={"type": "boolean"}), "201"),
    ("get", "/openapi.json", "This document", "OpenApi", [], None, "200"),
]


def _strict(required: list[str], **props: Any) -> dict[str, Any]:
    """An object with exactly these properties (``required`` always present, nothing else)."""
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


_INT = {"type": "integer"}
_NUM = {"type": "number"}
_STR = {"type": "string"}
_INT_OR_NULL = {"type": "integer", "nullable": True}
_NUM_OR_NULL = {"type": "number", "nullable": True}
_STR_OR_NULL = {"type": "string", "nullable": True}
_STATUSES = ["proposed", "accepted", "rejected", "edited"]


def _schemas() -> dict[str, Any]:
    """Response shapes, checked against real responses by ``tests/web/test_openapi.py``."""
    def page(item: dict[str, Any]) -> dict[str, Any]:
        return _strict(["items", "next_cursor"], items={"type": "array", "items": item}, next_cursor=_STR_OR_NULL)

    box = _strict(["id", "image_id", "category_id", "x1", "y1", "x2", "y2", "score", "source", "status", "version",
                   "model_version_id", "reviewer_id"],
                  id=_INT, image_id=_INT, category_id=_INT, x1=_NUM, y1=_NUM, x2=_NUM, y2=_NUM, score=_NUM_OR_NULL,
                  source={"type": "string", "enum": ["cam", "human", "ground_truth"]}, status={"type": "string", "enum": _STATUSES},
                  version=_INT, model_version_id=_INT_OR_NULL, reviewer_id=_INT_OR_NULL)
    job = _strict(["id", "collection_id", "kind", "status", "done", "total", "error", "params", "result", "cancel_requested",
                   "created_at", "started_at", "finished_at"],
                  id=_INT, collection_id=_INT_OR_NULL, kind=_STR,
                  status={"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
                  done=_INT, total=_INT_OR_NULL, error=_STR_OR_NULL,
                  params={"type": "object", "description": "the job's parameters; never server paths"},
                  result={"type": "object", "nullable": True}, cancel_requested={"type": "boolean"},
                  created_at=_STR_OR_NULL, started_at=_STR_OR_NULL, finished_at=_STR_OR_NULL)
    concept_map = _strict(["id", "category_id", "model_version_id", "map_url", "overlay_url"], id=_INT, category_id=_INT,
                          model_version_id=_INT, map_url={"type": "string", "description": "GET it for the map's values (MapValues)"},
                          overlay_url={"type": "string", "nullable": True,
                                       "description": "a stored colour-mapped PNG where the map has one"})
    image_fields = dict(id=_INT, collection_id=_INT, rel_path=_STR, width=_INT_OR_NULL, height=_INT_OR_NULL,
                        status={"type": "string", "enum": ["ok", "failed"]}, failure_reason=_STR_OR_NULL, n_boxes=_INT,
                        min_score=_NUM_OR_NULL, max_score=_NUM_OR_NULL, url=_STR_OR_NULL, thumb_url=_STR_OR_NULL)
    image_required = list(image_fields)
    image = _strict(image_required, **image_fields, boxes={"type": "array", "items": _ref("Box")},
                    concept_maps={"type": "array", "items": concept_map})
    category = _strict(["id", "name"], id=_INT, name=_STR)
    collection = _strict(["id", "name", "created_at", "categories"], id=_INT, name=_STR, created_at=_STR_OR_NULL,
                         categories={"type": "array", "items": category},
                         images=_strict(["ok", "failed"], ok=_INT, failed=_INT))
    evaluation = _strict(["id", "model_version_id", "job_id", "box_status", "metrics", "created_at"], id=_INT,
                         model_version_id=_INT_OR_NULL, job_id=_INT_OR_NULL, box_status=_STR, metrics={"type": "object"},
                         created_at=_STR_OR_NULL)
    model = _strict(["id", "name", "arch", "collection_id", "class_names", "n_classes", "metrics"], id=_INT, name=_STR, arch=_STR,
                    collection_id=_INT_OR_NULL, class_names={"type": "array", "items": _STR}, n_classes=_INT,
                    metrics={"type": "object", "nullable": True})
    token = _strict(["id", "prefix", "name", "revoked", "created_at"], id=_INT, prefix=_STR, name=_STR_OR_NULL,
                    revoked={"type": "boolean"}, created_at=_STR_OR_NULL)
    user = _strict(["id", "email", "role", "active"], id=_INT, email=_STR, role={"type": "string", "enum": ["admin", "reviewer"]},
                   active={"type": "boolean"})
    return {
        "Box": box, "Job": job, "Image": image, "Collection": collection, "Evaluation": evaluation, "Model": model,
        "Token": token, "User": user,
        "Upload": _strict(["job", "files"], job=_ref("Job"), files={"type": "integer", "description": "files received"}),
        "Me": _strict(["id", "email", "role"], id=_INT, email=_STR, role={"type": "string", "enum": ["admin", "reviewer"]}),
        "TokenCreated": _strict(["id", "prefix", "name", "token"], id=_INT, prefix=_STR, name=_STR_OR_NULL,
                                token={"type": "string", "description": "the secret, shown once"}),
        "AcceptAll": _strict(["updated"], updated={"type": "array", "items": _ref("Box")}),
        "BulkAccept": _strict(["accepted", "operation_id"], accepted=_INT,
                              operation_id={"type": "integer", "description": "undo with .../review-operations/<id>/undo"}),
        "ReviewStats": _strict(["images", "classes"],
                               images=_strict(["total", "to_review", "reviewed", "no_objects"], total=_INT, to_review=_INT,
                                              reviewed=_INT, no_objects=_INT),
                               classes={"type": "array", "items": _strict(
                                   ["category_id", "name", "proposed", "accepted", "rejected", "edited", "reviewed"], category_id=_INT,
                                   name=_STR, proposed=_INT, accepted=_INT, rejected=_INT, edited=_INT, reviewed=_INT)}),
        "BulkAcceptPreview": _strict(["n_boxes", "n_images", "samples", "expected_right", "reviewed"], n_boxes=_INT, n_images=_INT, samples={
            "type": "array", "items": _strict(["id", "rel_path", "score", "thumb_url"], id=_INT, rel_path=_STR, score=_NUM_OR_NULL,
                                              thumb_url=_STR)},
            expected_right={"type": "number", "description": "sum of the boxes' scores: the right boxes the accept is expected to hold"},
            reviewed={**_strict(["boxes", "accepted", "edited", "rejected"], boxes=_INT, accepted=_INT, edited=_INT, rejected=_INT),
                      "description": "the class's boxes scoring at least min_score that a person judged one by one "
                                     "(not as a bulk write left them): accepted as proposed, edited, rejected"}),
        "Operation": _strict(["operation_id", "kind", "status", "n_boxes", "params", "undone"], operation_id=_INT, kind=_STR, status=_STR,
                             n_boxes=_INT, params={"type": "object", "nullable": True}, undone={"type": "boolean"}),
        "Undo": _strict(["operation_id", "restored", "skipped"], operation_id=_INT, restored=_INT, skipped=_INT),
        "ImageCount": _strict(["count", "exact"], count=_INT,
                              exact={"type": "boolean", "description": "false: more images match than count"}),
        "GroundTruthReport": _strict(
            ["format", "files", "images_matched", "boxes_imported", "boxes_replaced", "boxes_clipped", "boxes_rejected", "files_failed",
             "categories_created", "errors", "warnings"],
            format=_STR, files=_INT, images_matched=_INT, boxes_imported=_INT, boxes_replaced=_INT, boxes_clipped=_INT,
            boxes_rejected=_INT, files_failed=_INT, categories_created={"type": "array", "items": _STR},
            errors={"type": "array", "items": _strict(["file", "reason"], file=_STR, reason=_STR)},
            warnings={"type": "array", "items": _strict(["file", "reason"], file=_STR, reason=_STR)}),
        "NoObjects": _strict(["image_id", "review_state", "boxes"], image_id=_INT,
                             review_state={"type": "string", "enum": ["unreviewed", "reviewed", "no_objects"]},
                             boxes={"type": "array", "items": _ref("Box"), "description": "the boxes the action rejected"}),
        "MapValues": _strict(["shape", "values", "min", "max"],
                             shape={"type": "array", "items": _INT, "minItems": 2, "maxItems": 2, "description": "[h, w] map cells"},
                             values={"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255},
                                     "description": "h * w values, row-major: the map min-max normalised, 255 = hottest"},
                             min={"type": "number", "description": "the raw map's minimum"},
                             max={"type": "number", "description": "the raw map's maximum"}),
        "OpenApi": {"type": "object", "required": ["openapi", "paths"]},
        "ExportFile": {"description": "coco: a COCO object; coco-results: an array of detections (yolo and voc: application/zip)",
                       "oneOf": [{"type": "object", "required": ["images", "annotations", "categories"]}, {"type": "array"}]},
        "BoxPage": page(_ref("Box")), "JobPage": page(_ref("Job")), "ImagePage": page(_ref("Image")),
        "CollectionPage": page(_ref("Collection")), "EvaluationPage": page(_ref("Evaluation")), "ModelPage": page(_ref("Model")),
        "TokenPage": page(_ref("Token")), "UserPage": page(_ref("User")),
        "Error": {"type": "object", "required": ["error"], "additionalProperties": False, "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": _STR, "message": _STR, "field": {"type": "string", "description": "the request field at fault"}},
        }}},
    }


def build_document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, summary, schema, params, body, ok in ENDPOINTS:
        path_params = [{"name": seg[1:-1], "in": "path", "required": True, "schema": {"type": "string" if seg == "{key}" else "integer"}}
                       for seg in path.split("/") if seg.startswith("{")]
        op: dict[str, Any] = {"summary": summary, "parameters": path_params + params, "responses": {
            ok: {"description": "success", **({"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}} if schema else {})},
            "400": _ERR, "401": _ERR, "403": _ERR, "404": _ERR, "409": _ERR, "413": _ERR, "503": _ERR,
        }}
        if body == "multipart":
            op["responses"]["507"] = _ERR  # the server's storage is full
        if schema == "ExportFile":
            op["responses"][ok]["content"]["application/zip"] = {"schema": {"type": "string", "format": "binary"}}
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
