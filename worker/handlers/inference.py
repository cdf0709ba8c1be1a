"""The infer job: concept maps and proposed boxes for every image of a collection.

Params: ``model_version_id`` (an id, ``"imagenet"`` for the built-in ImageNet-1k classifier,
or absent for the newest model trained on this collection), ``top_k`` (classes per image when
it has no tag the model knows; default 1), optional ``box_params`` (camcore ``BoxParams``
fields; default: the model version's calibration, else camcore's defaults).

Images are visited in id order, ``ctx.chunk_size`` at a time. An image's tags are mapped by
category *name* onto the model's classes; an image with no matching tag gets its top-k
predicted classes, and categories are created for class names the collection lacks. Per
chunk: maps are stored as blobs first (content-addressed, so a re-run writes the same keys),
then one transaction replaces the chunk's concept-map rows and CAM proposals of this model
version and advances the cursor. A chunk that was interrupted is simply redone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from worker.categories import ensure_categories
from worker.execution import JobContext, JobFailed
from worker.models_cache import builtin_imagenet_version, load_model
from worker.store.bulk import replace_boxes, upsert_concept_maps
from worker.store.models import Category, ConceptMap, Image, ImageStatus, ImageTag, ModelVersion

#: Longest side in pixels of the stored heatmap PNG (browsers scale it over the photo).
OVERLAY_MAX_SIDE = 512


def resolve_model_version(session: Any, collection_id: int, requested: Any) -> ModelVersion:
    """The model version an infer job uses (see the module docstring); ``JobFailed`` if none."""
    if requested in (None, ""):
        found = session.scalars(select(ModelVersion).where(ModelVersion.collection_id == collection_id)
                                .order_by(ModelVersion.id.desc())).first()
        if found is None:
            raise JobFailed("no model has been trained on this collection; train one first or choose a model "
                            "(e.g. the built-in 'imagenet' classifier)")
        return found
    if isinstance(requested, str) and requested.lower().startswith("imagenet"):
        arch = requested.split(":", 1)[1] if ":" in requested else "efficientnet_lite0"
        return builtin_imagenet_version(session, arch=arch)
    try:
        version_id = int(requested)
    except (TypeError, ValueError) as exc:
        raise JobFailed(f"model {requested!r} is neither a model version id nor 'imagenet'") from exc
    found = session.get(ModelVersion, version_id)
    if found is None:
        raise JobFailed(f"model version {version_id} does not exist")
    return found


def _box_params(ctx: JobContext, version: ModelVersion) -> Any:
    from camcore.pipeline import BoxParams

    chosen = ctx.params.get("box_params")
    if chosen is None and isinstance(version.calibration, dict):
        chosen = version.calibration.get("box_params", version.calibration.get("params"))
    try:
        return BoxParams.from_dict(chosen if isinstance(chosen, dict) else None)
    except (TypeError, ValueError) as exc:
        raise JobFailed(f"bad box parameters: {exc}") from exc


def _overlay_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, OVERLAY_MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def run_infer_job(ctx: JobContext) -> dict[str, Any]:
    """Handler of ``infer`` jobs (see the module docstring)."""
    from camcore.concept_maps import encode_map, render_heatmap_png
    from camcore.images import ImageLoadError, load_image
    from camcore.pipeline import Localizer

    if ctx.collection_id is None:
        raise JobFailed("an infer job needs a collection")
    collection_id = ctx.collection_id
    top_k = int(ctx.params.get("top_k", 1))
    if top_k < 1:
        raise JobFailed(f"top_k must be >= 1, got {top_k}")
    with ctx.session() as session:
        version = resolve_model_version(session, collection_id, ctx.state.get("model_version_id", ctx.params.get("model_version_id")))
        remaining = session.query(Image).filter(Image.collection_id == collection_id, Image.status == ImageStatus.ok,
                                                Image.id > int(ctx.state.get("cursor", 0))).count()
        session.expunge(version)
    params = _box_params(ctx, version)
    if "model_version_id" not in ctx.state:
        with ctx.chunk(done=0, state={"model_version_id": version.id, "cursor": 0, "images_failed": 0, "boxes": 0,
                                      "box_params": params.to_dict()}):
            pass
    ctx.set_progress(ctx.done, ctx.done + remaining)
    ctx.check()
    try:
        model, spec = load_model(version, ctx.runtime.blobs, ctx.device)
    except Exception as exc:  # noqa: BLE001 - unreadable checkpoint / weights: a clear job failure
        raise JobFailed(f"could not load model version {version.id}: {exc}") from exc
    localizer = Localizer(model, spec, device=ctx.device, params=params, batch_size=int(ctx.params.get("batch_size", 16)))
    class_index = {name: i for i, name in enumerate(spec.class_names)}
    blobs = ctx.runtime.blobs
    cursor = int(ctx.state.get("cursor", 0))
    n_failed = int(ctx.state.get("images_failed", 0))
    n_boxes = int(ctx.state.get("boxes", 0))
    done = ctx.done
    while True:
        ctx.check()
        with ctx.session() as session:
            rows = session.execute(
                select(Image.id, Image.storage_key).where(Image.collection_id == collection_id, Image.status == ImageStatus.ok,
                                                          Image.id > cursor).order_by(Image.id).limit(ctx.chunk_size)
            ).all()
            ids = [row[0] for row in rows]
            tags: dict[int, list[str]] = {}
            for image_id, name in session.execute(select(ImageTag.image_id, Category.name).join(Category, Category.id == ImageTag.category_id)
                                                  .where(ImageTag.image_id.in_(ids))):
                tags.setdefault(image_id, []).append(name)
        if not rows:
            break
        loaded: list[tuple[int, Any]] = []
        failed: list[tuple[int, str]] = []
        for image_id, key in rows:
            try:
                if not key:
                    raise ImageLoadError("the image has no stored file")
                loaded.append((image_id, load_image(blobs.local_path(key))))
            except ImageLoadError as exc:
                failed.append((image_id, exc.reason))
            except Exception as exc:  # noqa: BLE001 - one bad file never stops the job
                failed.append((image_id, f"{type(exc).__name__}: {exc}"))
        tagged = [(i, (image_id, im)) for i, (image_id, im) in enumerate(loaded)
                  if any(name in class_index for name in tags.get(image_id, []))]
        untagged = [(i, (image_id, im)) for i, (image_id, im) in enumerate(loaded)
                    if not any(name in class_index for name in tags.get(image_id, []))]
        results: dict[int, Any] = {}
        if tagged:
            wanted = [sorted({class_index[n] for n in tags[image_id] if n in class_index}) for _i, (image_id, _im) in tagged]
            for (_i, (image_id, _im)), result in zip(tagged, localizer.localize([im for _i, (_id, im) in tagged], wanted, top_k=top_k)):
                results[image_id] = result
        if untagged:
            for (_i, (image_id, _im)), result in zip(untagged, localizer.localize([im for _i, (_id, im) in untagged], None, top_k=top_k)):
                results[image_id] = result
        map_rows: list[dict[str, Any]] = []
        box_rows: list[dict[str, Any]] = []
        for image_id, result in results.items():
            width, height = result.image_size
            for cls, cam in result.maps.items():
                map_rows.append({"image_id": image_id, "class": spec.class_names[cls],
                                 "raw_key": blobs.put_bytes(encode_map(cam), kind="maps", suffix=".npy"),
                                 "overlay_key": blobs.put_bytes(render_heatmap_png(cam, _overlay_size(width, height), opacity=1.0),
                                                                kind="overlays", suffix=".png")})
            for box, score, label in zip(result.boxes.tolist(), result.scores.tolist(), result.labels.tolist()):
                box_rows.append({"image_id": image_id, "class": spec.class_names[label], "x1": box[0], "y1": box[1],
                                 "x2": box[2], "y2": box[3], "score": score})
        done += len(rows)
        cursor = ids[-1]
        n_failed += len(failed)
        n_boxes += len(box_rows)
        with ctx.chunk(done=done, state={"cursor": cursor, "images_failed": n_failed, "boxes": n_boxes}) as session:
            names = {row["class"] for row in map_rows} | {row["class"] for row in box_rows}
            category = ensure_categories(session, collection_id, names)
            for image_id, reason in failed:
                session.execute(update(Image).where(Image.id == image_id).values(status=ImageStatus.failed, failure_reason=reason))
            session.execute(delete(ConceptMap).where(ConceptMap.image_id.in_(ids), ConceptMap.model_version_id == version.id))
            upsert_concept_maps(session, [{"image_id": r["image_id"], "category_id": category[r["class"]], "model_version_id": version.id,
                                           "raw_key": r["raw_key"], "overlay_key": r["overlay_key"]} for r in map_rows])
            replace_boxes(session, ids, version.id, [{"image_id": r["image_id"], "category_id": category[r["class"]], "x1": r["x1"],
                                                      "y1": r["y1"], "x2": r["x2"], "y2": r["y2"], "score": r["score"]} for r in box_rows])
    return {"model_version_id": version.id, "images": done, "images_failed": n_failed, "boxes": n_boxes}
