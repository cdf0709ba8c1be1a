"""Model versions: the one a job names (:func:`model_version_for`), the built-in ImageNet row on
demand, and loaded models in a small per-process cache."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.store.blobs import LocalBlobStore
from worker.store.models import ModelVersion

IMAGENET_PREFIX = "imagenet-"
_CACHE_SIZE = 2
_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str, str], tuple[Any, Any]] = OrderedDict()


class ModelVersionMissing(LookupError):
    """The model version a job names, or the newest trained on its collection, does not exist."""


def is_builtin_ref(ref: object) -> bool:
    """``ref`` names the built-in ImageNet classifier: ``imagenet`` or ``imagenet:<arch>``."""
    return isinstance(ref, str) and ref.lower().startswith("imagenet")


def model_version_for(session: Session, collection_id: int, ref: object) -> ModelVersion:
    """The model version a job's ``model_version_id`` names: ``None`` (or ``""``) the newest
    trained on the collection, ``imagenet`` / ``imagenet:<arch>`` the built-in classifier (its row
    created on first use), else a model version id. :class:`ModelVersionMissing` when there is none."""
    if ref in (None, ""):
        found = session.scalars(select(ModelVersion).where(ModelVersion.collection_id == collection_id)
                                .order_by(ModelVersion.id.desc())).first()
        if found is None:
            raise ModelVersionMissing("no model has been trained on this collection yet; train one first or choose a model "
                                      "(e.g. the built-in 'imagenet' classifier)")
        return found
    if is_builtin_ref(ref):
        text = str(ref)
        return builtin_imagenet_version(session, arch=text.split(":", 1)[1]) if ":" in text else builtin_imagenet_version(session)
    try:
        version_id = int(ref)  # type: ignore[call-overload]  # ref is a JSON value; a non-number is refused below
    except (TypeError, ValueError):
        raise ModelVersionMissing(f"model {ref!r} is neither a model version id nor 'imagenet'") from None
    found_by_id = session.get(ModelVersion, version_id)
    if found_by_id is None:
        raise ModelVersionMissing(f"model version {version_id} does not exist")
    return found_by_id


def builtin_imagenet_version(session: Session, *, arch: str = "efficientnet_lite0") -> ModelVersion:
    """The ImageNet-1k classifier's model-version row (``collection_id`` NULL), created on first use."""
    name = f"{IMAGENET_PREFIX}{arch}"
    found = session.scalars(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.collection_id.is_(None),
                                                       ModelVersion.checkpoint_key.is_(None)).order_by(ModelVersion.id)).first()
    if found is not None:
        return found
    from camcore.models import ModelSpec, imagenet_class_names

    spec = ModelSpec(arch=arch, class_names=imagenet_class_names())
    version = ModelVersion(collection_id=None, name=name, arch=arch, spec=spec.to_dict(), class_names=list(spec.class_names),
                           checkpoint_key=None, metrics={"source": "ImageNet-1k pretrained"})
    session.add(version)
    session.flush()
    return version


def load_model(version: ModelVersion, blobs: LocalBlobStore, device: str) -> tuple[Any, Any]:
    """``(model, spec)`` of a model version on ``device`` (cached: at most two per process).

    The cache is keyed by the weights themselves (the blob store and checkpoint key, or the built-in
    classifier's name), not by the row id: a process that serves several databases (the embedded
    worker, the CLI) sees the same id name different models."""
    key = (str(blobs.root), version.checkpoint_key or version.name, device)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    from camcore.models import imagenet_classifier, load_checkpoint

    if version.checkpoint_key:
        with blobs.open(version.checkpoint_key) as fh:
            model, spec = load_checkpoint(fh, map_location=device)
    elif version.name.startswith(IMAGENET_PREFIX):
        model, spec = imagenet_classifier(arch=version.arch)
        model = model.to(device)
    else:
        raise ValueError(f"model version {version.id} has no checkpoint")
    with _lock:
        _cache[key] = (model, spec)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return model, spec
