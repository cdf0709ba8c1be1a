"""Checks a job must pass before it is queued: a job that cannot run is refused with the reason
at once (HTTP 400 in the web app) instead of starting and failing inside the worker.

``check_job(session, kind=..., collection_id=..., params=...)`` raises :class:`JobRefused`
(a ``ValueError`` naming the field at fault, when one is) for:

- train: an unknown architecture (the choices are ``camcore.models.ARCHITECTURES``), a
  collection with no usable image, or no image with a tag;
- infer: a collection with no usable image, a model version that does not exist, or no model
  trained on the collection when none is named;
- evaluate: a collection without ground truth;
- calibrate: a model version that does not exist.

``params`` are a job's checked parameters (:mod:`worker.jobs.params` checks their shapes, types
and ranges first).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from worker.jobs.params import TrainParams
from worker.models_cache import ModelVersionMissing, is_builtin_ref, model_version_for
from worker.store.models import Box, BoxSource, Image, ImageStatus, ImageTag, JobKind

#: The architecture a train job uses when none is named.
DEFAULT_ARCH = TrainParams.arch


class JobRefused(ValueError):
    """A job that cannot run; ``field`` names the parameter at fault (``None``: the collection)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def architectures() -> tuple[str, ...]:
    """The architectures a train job accepts (``camcore.models.ARCHITECTURES``)."""
    from camcore.models import ARCHITECTURES

    return ARCHITECTURES


def _usable_images(session: Session, collection_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(Image).where(Image.collection_id == collection_id,
                                                                             Image.status == ImageStatus.ok)) or 0)


def _check_train(session: Session, collection_id: int, params: dict[str, Any]) -> None:
    arch = params.get("arch") or DEFAULT_ARCH
    choices = architectures()
    if arch not in choices:
        raise JobRefused(f"unknown architecture {str(arch)[:60]!r}; choose one of {list(choices)}", "arch")
    if _usable_images(session, collection_id) == 0:
        raise JobRefused("the collection has no images to train on; upload some first")
    tagged = session.scalar(select(exists().where(ImageTag.image_id == Image.id, Image.collection_id == collection_id,
                                                  Image.status == ImageStatus.ok)))
    if not tagged:
        raise JobRefused("no image of the collection has a tag, and training learns from tags: upload images into "
                         "tag folders, with a tag, or with a CSV manifest")


def _check_model(session: Session, collection_id: int, params: dict[str, Any], *, required: bool) -> None:
    ref = params.get("model_version_id")
    if is_builtin_ref(ref) or (ref in (None, "") and not required):  # the built-in row is the job's to create
        return
    try:
        model_version_for(session, collection_id, ref)
    except ModelVersionMissing as exc:
        raise JobRefused(str(exc), "model_version_id") from exc


def check_job(session: Session, *, kind: JobKind | str, collection_id: int, params: dict[str, Any]) -> None:
    """Raise :class:`JobRefused` when a ``kind`` job on the collection cannot run (see the module docstring)."""
    kind = JobKind(kind)
    if kind == JobKind.train:
        _check_train(session, collection_id, params)
    elif kind == JobKind.infer:
        if _usable_images(session, collection_id) == 0:
            raise JobRefused("the collection has no images to run the model on; upload some first")
        _check_model(session, collection_id, params, required=True)
    elif kind == JobKind.evaluate:
        has_gt = session.scalar(select(exists().where(Box.image_id == Image.id, Image.collection_id == collection_id,
                                                      Box.source == BoxSource.ground_truth)))
        if not has_gt:
            raise JobRefused("the collection has no ground truth to evaluate against; import it first "
                             "(Ground truth on the collection page, or 'camlabel gt import')")
    elif kind == JobKind.calibrate:
        _check_model(session, collection_id, params, required=False)
