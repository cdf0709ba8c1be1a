"""The JSON shapes of the API: one function per row type, used by every view that answers it.

Times are ISO 8601 strings (UTC) or ``null``; enums are their stored values; box coordinates
are float pixels of the stored image, ``x1 y1 x2 y2`` (xyxy).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from web.public import public_params, public_text
from worker.store.models import (
    ApiToken,
    Box,
    BoxSource,
    Collection,
    ConceptMap,
    Evaluation,
    Image,
    Job,
    JobKind,
    ModelVersion,
    ReviewStatus,
    Role,
    User,
)

MAX_LISTED_CLASS_NAMES = 50


def iso(value: datetime | None) -> str | None:
    """``value`` as ISO 8601 text, or ``None``."""
    return value.isoformat() if value is not None else None


def box_json(box: Box) -> dict[str, Any]:
    """``{"id", "image_id", "category_id", "x1", "y1", "x2", "y2", "score", "source", "status",
    "version", "model_version_id", "reviewer_id"}``."""
    return {
        "id": box.id, "image_id": box.image_id, "category_id": box.category_id,
        "x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2, "score": box.score,
        "source": BoxSource(box.source).value, "status": ReviewStatus(box.status).value, "version": box.version,
        "model_version_id": box.model_version_id, "reviewer_id": box.reviewer_id,
    }


def image_json(image: Image) -> dict[str, Any]:
    """An image row with its box statistics and ``url`` / ``thumb_url`` under ``/blobs/``."""
    return {
        "id": image.id, "collection_id": image.collection_id, "rel_path": image.rel_path, "width": image.width,
        "height": image.height, "status": image.status.value if hasattr(image.status, "value") else image.status,
        "failure_reason": image.failure_reason, "n_boxes": image.n_boxes, "min_score": image.min_score,
        "max_score": image.max_score, "url": f"/blobs/{image.storage_key}" if image.storage_key else None,
        "thumb_url": f"/blobs/{image.thumb_key or image.storage_key}" if (image.thumb_key or image.storage_key) else None,
    }


def concept_map_json(cmap: ConceptMap) -> dict[str, Any]:
    """A concept map row: ``map_url`` serves its values (``GET /api/v1/maps/<key>``); ``overlay_url``
    a stored colour-mapped PNG where the row has one (``None`` otherwise: clients paint the values)."""
    return {"id": cmap.id, "category_id": cmap.category_id, "model_version_id": cmap.model_version_id,
            "map_url": f"/api/v1/maps/{cmap.raw_key}", "overlay_url": f"/blobs/{cmap.overlay_key}" if cmap.overlay_key else None}


def job_json(job: Job, data_dir: Path) -> dict[str, Any]:
    """A job as users see it: no server paths (under ``data_dir`` or elsewhere) in ``params``,
    ``error`` or ``result`` (:mod:`web.public`)."""
    return {
        "id": job.id, "collection_id": job.collection_id, "kind": JobKind(job.kind).value, "status": job.status.value,
        "done": job.done, "total": job.total, "error": public_text(job.error, data_dir), "params": public_params(job.params),
        "result": public_text(job.result, data_dir),
        "cancel_requested": job.cancel_requested, "created_at": iso(job.created_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }


def collection_json(collection: Collection) -> dict[str, Any]:
    """``{"id", "name", "created_at", "categories": [{"id", "name"}]}``."""
    return {"id": collection.id, "name": collection.name, "created_at": iso(collection.created_at),
            "categories": [{"id": c.id, "name": c.name} for c in collection.categories]}


def review_state_json(image: Image, boxes: list[Box] | None = None) -> dict[str, Any]:
    """``{"image_id", "review_state", "boxes"}``: an image's review state and the boxes an action changed."""
    state = image.review_state.value if hasattr(image.review_state, "value") else str(image.review_state)
    return {"image_id": image.id, "review_state": state, "boxes": [box_json(b) for b in boxes or []]}


def evaluation_json(evaluation: Evaluation) -> dict[str, Any]:
    """``{"id", "model_version_id", "job_id", "box_status", "metrics", "created_at"}``."""
    return {"id": evaluation.id, "model_version_id": evaluation.model_version_id, "job_id": evaluation.job_id,
            "box_status": evaluation.box_status, "metrics": evaluation.metrics, "created_at": iso(evaluation.created_at)}


def model_version_json(version: ModelVersion) -> dict[str, Any]:
    """A model version an infer job can apply: its first :data:`MAX_LISTED_CLASS_NAMES` class names
    and ``n_classes`` in all."""
    return {"id": version.id, "name": version.name, "arch": version.arch, "collection_id": version.collection_id,
            "class_names": version.class_names[:MAX_LISTED_CLASS_NAMES], "n_classes": len(version.class_names),
            "metrics": version.metrics}


def user_json(user: User) -> dict[str, Any]:
    """``{"id", "email", "role", "active"}``."""
    return {"id": user.id, "email": user.email, "role": Role(user.role).value, "active": user.active}


def token_json(token: ApiToken) -> dict[str, Any]:
    """An API token without its secret: ``{"id", "prefix", "name", "revoked", "created_at"}``."""
    return {"id": token.id, "prefix": token.prefix, "name": token.name, "revoked": token.revoked_at is not None,
            "created_at": iso(token.created_at)}


def new_token_json(token: ApiToken, secret: str) -> dict[str, Any]:
    """A token just created: ``{"id", "prefix", "name", "token"}``, the secret shown this once."""
    return {"id": token.id, "prefix": token.prefix, "name": token.name, "token": secret}
