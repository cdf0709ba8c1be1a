"""The train job: a GAP classifier head on the collection's image-level tags -> a model version.

Params: :class:`worker.jobs.params.TrainParams`. Classes are the
collection's categories that tag at least one usable image, in category-id order. Progress is
camcore's own ``(done, total)``; a cancel is honoured at the next progress tick. Training is
one unit of work: the checkpoint blob and the :class:`ModelVersion` row are written in one
final chunk, and a resumed job that finds its model version already made returns it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from worker.jobs.params import TrainParams
from worker.queue.context import JobContext, JobFailed
from worker.store.models import Category, Image, ImageStatus, ImageTag, ModelVersion

if TYPE_CHECKING:
    from camcore.objectness import ObjectnessStats
    from camcore.threshold_choice import ThresholdChoice

PROGRESS_EVERY_S = 1.0


def run_train_job(ctx: JobContext) -> dict[str, Any]:
    """Handler of ``train`` jobs (see the module docstring)."""
    from camcore.models import ModelSpec, save_checkpoint
    from camcore.separability import stored_verdict
    from camcore.threshold_choice import model_box_params, rule_text
    from camcore.training import train_head

    if ctx.collection_id is None:
        raise JobFailed("a train job needs a collection")
    if ctx.state.get("model_version_id"):
        return {"model_version_id": ctx.state["model_version_id"]}
    params = ctx.read_params(TrainParams)
    arch = params.arch
    with ctx.session() as session:
        rows = session.execute(
            select(Image.id, Image.storage_key, Category.id, Category.name)
            .join(ImageTag, ImageTag.image_id == Image.id).join(Category, Category.id == ImageTag.category_id)
            .where(Image.collection_id == ctx.collection_id, Image.status == ImageStatus.ok, Image.storage_key.is_not(None))
            .order_by(Image.id, Category.id)
        ).all()
    if not rows:
        raise JobFailed("the collection has no tagged images to train on; import images with tags first")
    class_ids = sorted({row[2] for row in rows})
    names_by_id = {row[2]: row[3] for row in rows}
    class_names = [names_by_id[c] for c in class_ids]
    index = {c: i for i, c in enumerate(class_ids)}
    keys: dict[int, str] = {}
    targets: dict[int, list[int]] = {}
    for image_id, key, category_id, _name in rows:
        assert key is not None  # selected with storage_key IS NOT NULL
        keys[image_id] = key
        targets.setdefault(image_id, []).append(index[category_id])
    image_ids = sorted(keys)
    ctx.set_progress(0, len(image_ids))  # a total from the start; camcore's phases report their own as they run
    blobs = ctx.runtime.blobs
    spec_kwargs: dict[str, Any] = {"arch": arch, "class_names": class_names}
    if params.input_size:
        spec_kwargs["input_size"] = params.input_size
    try:
        spec = ModelSpec(**spec_kwargs)
    except (TypeError, ValueError) as exc:
        raise JobFailed(f"bad model settings: {exc}") from exc
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or done >= total:
            last[0] = now
            ctx.set_progress(done, total)
            ctx.check()

    try:
        trained = train_head(
            spec, [blobs.local_path(keys[i]) for i in image_ids], [targets[i] for i in image_ids], mode=params.mode,
            seed=params.seed, device=ctx.device, epochs=params.epochs, progress=progress,
            weights=params.pretrained, cache_dir=ctx.runtime.settings.data_dir / "cache" / "features",
        )
    except ValueError as exc:
        raise JobFailed(f"training failed: {exc}") from exc
    skipped = {int(item["index"]) for item in trained.metrics.get("skipped", [])}
    usable = [i for n, i in enumerate(image_ids) if n not in skipped]
    try:
        stats = _fit_objectness(ctx, trained, [blobs.local_path(keys[i]) for i in usable], [targets[i] for i in usable], progress)
    except ValueError as exc:
        raise JobFailed(f"fitting the objectness statistics failed: {exc}") from exc
    try:
        choice = _choose_threshold(ctx, trained, [blobs.local_path(keys[i]) for i in usable],
                                   [targets[i] for i in usable], params.seed, progress)
    except ValueError as exc:
        raise JobFailed(f"choosing the box threshold failed: {exc}") from exc
    # the new version's starting calibration: the BoxParams infer jobs use until a calibrate job
    # refits them on reviewed boxes; None while camcore's default rule stays
    calibration = model_box_params(trained.spec).to_dict() if choice.threshold is not None else None
    buffer = io.BytesIO()
    save_checkpoint(trained.model, trained.spec, buffer)
    checkpoint_key = blobs.put_bytes(buffer.getvalue(), kind="checkpoints", suffix=".pt")
    name = params.name or f"{arch}-{params.mode}-job{ctx.job_id}"
    with ctx.chunk(done=ctx.done, state={}) as session:
        version = ModelVersion(collection_id=ctx.collection_id, name=name, arch=arch, spec=trained.spec.to_dict(),
                               class_names=list(trained.spec.class_names), checkpoint_key=checkpoint_key,
                               metrics=_json_safe(trained.metrics), job_id=ctx.job_id,
                               calibration=calibration)
        session.add(version)
        session.flush()
        ctx.state["model_version_id"] = version.id
    return {"model_version_id": version.id, "classes": class_names, "images": len(image_ids),
            "mean_ap": (trained.metrics.get("val") or trained.metrics.get("train") or {}).get("mean_ap"),
            "box_threshold": choice.reason,
            "objectness_only": objectness_only(stats, trained.spec.class_names),
            "tags_told_apart": stored_verdict(trained.spec.extra),
            "summary": f"Trained on {len(image_ids)} images, {len(class_names)} classes. "
                       f"Box threshold: {rule_text(choice.threshold)} ({choice.reason})."
                       + objectness_note(stats, trained.spec.class_names, stored_verdict(trained.spec.extra))}


def objectness_only(stats: ObjectnessStats, class_names: Sequence[str]) -> list[str]:
    """Names of the classes boxed by the objectness alone: not told apart by the classifier on
    held-out images, or with a class map that disagrees with the objectness."""
    assert stats.uses_cam is not None  # set by ObjectnessStats
    return [class_names[c] for c in range(len(class_names)) if bool(stats.valid[c]) and not bool(stats.uses_cam[c])]


def objectness_note(stats: ObjectnessStats, class_names: Sequence[str], told_apart: bool | None = None, *,
                    listed: int = 5) -> str:
    """One sentence for the job summary when some classes are boxed by the objectness alone, else
    ``""``. ``told_apart``: whether the classifier tells the tags apart on held-out images
    (:func:`camcore.separability.stored_verdict`); ``False`` is why every class is."""
    apart = objectness_only(stats, class_names)
    if not apart:
        return ""
    names = ", ".join(apart[:listed]) + (f" and {len(apart) - listed} more" if len(apart) > listed else "")
    why = ("the classifier does not tell the tags apart on held-out images, so the class maps carry no location"
           if told_apart is False else "their class maps point away from the objects")
    return f" {len(apart)} of {len(class_names)} classes are boxed by the collection's objectness alone ({why}): {names}."


def _fit_objectness(ctx: JobContext, trained: Any, paths: list[Path], tags: list[list[int]], progress: Any) -> ObjectnessStats:
    """Per-class DDT statistics (camcore.objectness) of the trained model, stored in its spec.

    The default box method fuses each class map with them (or uses them alone for a class whose
    map disagrees); one more forward pass over the training images (images that failed to load
    during training are left out).
    """
    from camcore.objectness import SPEC_KEY, fit_objectness

    stats = fit_objectness(trained.model, trained.spec, paths, tags, device=ctx.device, progress=progress)
    trained.spec.extra = {**dict(trained.spec.extra or {}), SPEC_KEY: stats.to_dict()}
    return stats


def _choose_threshold(ctx: JobContext, trained: Any, paths: list[Path], tags: list[list[int]], seed: int,
                      progress: Any) -> ThresholdChoice:
    """The collection's box threshold, chosen without ground truth (camcore.threshold_choice) and
    stored in the model's spec (it travels with the checkpoint)."""
    from camcore.threshold_choice import fit_threshold_choice

    choice = fit_threshold_choice(trained.model, trained.spec, paths, tags, device=ctx.device, seed=seed,
                                  progress=progress)
    trained.spec.extra = choice.stored_in(trained.spec.extra)
    return choice


def _json_safe(value: Any) -> Any:
    """Metrics as plain JSON (floats, not tensors / numpy scalars)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
