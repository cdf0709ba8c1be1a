"""The calibrate job: per-class box parameters from a few reviewed boxes, no model pass.

Params: :class:`worker.jobs.params.CalibrateParams` (``model_version_id``, default: the newest
model version with concept maps in this collection; ``preview``). Reviewed boxes are the collection's accepted or edited boxes and human boxes
that are not rejected, in images that have that model version's maps; their categories are
matched to the model's classes by name. :func:`camcore.calibration.calibrate` picks per-class
threshold rules and box corrections (``extra["box_correction"]``) from the stored maps of those
images, always relative to the version's uncalibrated params, so a re-run from the same reviews
stores the same thing. They are stored in ``model_versions.calibration`` (later infer jobs read it
as their ``BoxParams``), then every other image's CAM proposals are recomputed from its stored
maps in chunks with :func:`camcore.calibration.apply` (``replace_boxes``: idempotent, reviewed
boxes untouched). An (image, class) a reviewer already acted on gets no new proposal.

Images whose maps have descriptor codes (``concept_maps.codes_key``, one blob per image, stored by
the infer job for ``ddt_cam`` models) pass them on as ``codes_by_image``: calibration may learn a
location map from the reviewed boxes (adopted only when it localises the reviewed images better,
``calibration["review_map"]`` says which and why), and re-proposal applies it to every image
with codes; images without codes keep their raw maps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import or_, select

from worker.jobs.params import MAX_INPUT_SIZE, CalibrateParams
from worker.queue.context import JobContext, JobFailed
from worker.store.bulk import replace_boxes
from worker.store.models import Box, BoxSource, Category, ConceptMap, Image, ImageStatus, ModelVersion, ReviewStatus

REVIEWED = (ReviewStatus.accepted, ReviewStatus.edited)


def _version(session: Any, collection_id: int, requested: int | None) -> ModelVersion:
    if requested is not None:
        found = session.get(ModelVersion, requested)
        if found is None:
            raise JobFailed(f"model version {requested} does not exist")
        return found
    newest = session.scalar(
        select(ConceptMap.model_version_id).join(Image, Image.id == ConceptMap.image_id)
        .where(Image.collection_id == collection_id).order_by(ConceptMap.model_version_id.desc()).limit(1)
    )
    if newest is None:
        raise JobFailed("no concept maps in this collection: run an infer job first")
    return session.get(ModelVersion, newest)


def _maps(ctx: JobContext, rows: list[tuple[int, int, str]]) -> dict[int, dict[int, Any]]:
    """``{image id: {class index: Tensor[h, w]}}`` decoded from stored raw map blobs."""
    from camcore.concept_maps import decode_map

    out: dict[int, dict[int, Any]] = defaultdict(dict)
    for image_id, cls, key in rows:
        out[image_id][cls] = decode_map(ctx.runtime.blobs.read_bytes(key))
    return out


def _codes(ctx: JobContext, codes_keys: dict[int, str], image_ids: Iterable[int]) -> dict[int, Any]:
    """``{image id: Tensor[d, h, w]}`` descriptor codes of those of ``image_ids`` that have them
    (one blob read per image)."""
    from camcore.concept_maps import decode_codes

    return {image_id: decode_codes(ctx.runtime.blobs.read_bytes(codes_keys[image_id])) for image_id in image_ids if image_id in codes_keys}


def run_calibrate_job(ctx: JobContext) -> dict[str, Any]:
    """Handler of ``calibrate`` jobs (see the module docstring)."""
    from camcore.boxes import BoxParams
    from camcore.calibration import apply, calibrate

    if ctx.collection_id is None:
        raise JobFailed("a calibrate job needs a collection")
    job_params = ctx.read_params(CalibrateParams)
    with ctx.session() as session:
        version = _version(session, ctx.collection_id, job_params.model_version_id)
        class_index = {name: i for i, name in enumerate(version.class_names)}
        category_class = {
            cat_id: class_index[name]
            for cat_id, name in session.execute(select(Category.id, Category.name).where(Category.collection_id == ctx.collection_id))
            if name in class_index
        }
        map_rows: list[tuple[int, int, str, tuple[int, int]]] = []
        codes_keys: dict[int, str] = {}  # image id -> its descriptor codes blob (shared by its maps)
        for image_id, cat_id, key, codes_key, width, height in session.execute(
            select(ConceptMap.image_id, ConceptMap.category_id, ConceptMap.raw_key, ConceptMap.codes_key, Image.width, Image.height)
            .join(Image, Image.id == ConceptMap.image_id)
            .where(Image.collection_id == ctx.collection_id, Image.status == ImageStatus.ok,
                   ConceptMap.model_version_id == version.id)
            .order_by(ConceptMap.image_id)
        ):
            if cat_id in category_class and width is not None and height is not None:  # an ok image has its size
                map_rows.append((image_id, category_class[cat_id], key, (width, height)))
                if codes_key:
                    codes_keys[image_id] = codes_key
        reviewed_rows = session.execute(
            select(Box.image_id, Box.category_id, Box.x1, Box.y1, Box.x2, Box.y2).join(Image, Image.id == Box.image_id)
            .where(Image.collection_id == ctx.collection_id, Box.source != BoxSource.ground_truth,  # GT is for scoring only
                   or_(Box.status.in_(REVIEWED), (Box.source == BoxSource.human) & (Box.status != ReviewStatus.rejected)))
        ).all()
        acted_on = set(session.execute(
            select(Box.image_id, Box.category_id).join(Image, Image.id == Box.image_id)
            .where(Image.collection_id == ctx.collection_id, Box.source != BoxSource.ground_truth,
                   or_(Box.status != ReviewStatus.proposed, Box.source == BoxSource.human))
        ).all())
        base = BoxParams.from_dict(version.calibration or None)
        version_id = version.id
        input_size = _input_size(version.spec)
    sizes = {image_id: size for image_id, _cls, _key, size in map_rows}
    with_maps = set(sizes)
    reviewed: dict[int, list[tuple[int, list[float]]]] = defaultdict(list)
    for image_id, cat_id, x1, y1, x2, y2 in reviewed_rows:
        if image_id in with_maps and cat_id in category_class and x2 > x1 and y2 > y1:
            reviewed[image_id].append((category_class[cat_id], [x1, y1, x2, y2]))
    if not reviewed:
        raise JobFailed("no reviewed boxes to learn from: accept or correct the boxes of a few images first (20 images in total is a good start)")
    reviewed_maps = _maps(ctx, [(i, c, k) for i, c, k, _s in map_rows if i in reviewed])
    reviewed_codes = _codes(ctx, codes_keys, sorted(reviewed))
    params = calibrate(reviewed_maps, sizes, reviewed, base, codes_by_image=reviewed_codes or None)
    summary = learning_summary(params, len(reviewed), preview=job_params.preview, input_size=input_size)
    if job_params.preview:  # what applying would learn and its leave-one-out estimate; nothing written
        return {"model_version_id": version_id, "reviewed_images": len(reviewed), "preview": True, "summary": summary,
                "calibration": params.get("extra", {}).get("calibration", {})}
    with ctx.session() as session:
        stored = session.get(ModelVersion, version_id)
        if stored is None:
            raise JobFailed(f"model version {version_id} was deleted while the job ran")
        stored.calibration = params

    by_image: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
    for image_id, cls, key, _size in map_rows:
        by_image[image_id].append((image_id, cls, key))
    image_ids = sorted(by_image)
    reverse = {cls: cat_id for cat_id, cls in category_class.items()}
    ctx.set_progress(0, len(image_ids))
    written = 0
    for start in range(0, len(image_ids), ctx.chunk_size):
        ctx.check()
        chunk = image_ids[start:start + ctx.chunk_size]
        maps = _maps(ctx, [row for i in chunk for row in by_image[i]])
        # images without codes: their raw maps; the reviewed images' codes are already read
        codes = {**{i: reviewed_codes[i] for i in chunk if i in reviewed_codes},
                 **_codes(ctx, codes_keys, [i for i in chunk if i not in reviewed_codes])}
        recomputed = apply(maps, {i: sizes[i] for i in chunk}, params,  # tagged classes: scores from the maps
                           codes_by_image=codes or None)
        rows = [
            {"image_id": image_id, "category_id": reverse[int(label)], "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3], "score": score}
            for image_id, (boxes, scores, labels) in recomputed.items()
            for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True)
            if (image_id, reverse[int(label)]) not in acted_on
        ]
        with ctx.chunk(done=start + len(chunk)) as session:
            written += replace_boxes(session, chunk, version_id, rows)
    report = params.get("extra", {}).get("calibration", {})
    return {"model_version_id": version_id, "images": len(image_ids), "boxes": written,
            "reviewed_images": len(reviewed), "calibration": report, "summary": summary}


def _input_size(spec: Any) -> int | None:
    """The model version's network input side in pixels (``spec["input_size"]``), if it says."""
    value = spec.get("input_size") if isinstance(spec, dict) else None
    return int(value) if isinstance(value, int | float) and value >= 1 else None


def resolution_summary(report: dict[str, Any] | None, input_size: int | None) -> str:
    """When the reviewed objects are too small for the maps' cells to box (``calibration["resolution"]``,
    :class:`camcore.resolution.ResolutionCheck`): the input size whose cells are fine enough for
    them and its cost in time per image (pixels per pass); ``""`` otherwise (large enough, or an older result without the check)."""
    from camcore.resolution import FINEST_SIDE_CELLS, ResolutionCheck

    if not isinstance(report, dict) or not report:
        return ""
    try:
        check = ResolutionCheck.from_dict(report)
    except ValueError:
        return ""
    if not check.too_small:
        return ""
    cells = f"median side {check.median_side_cells:.1f} cells of a {check.grid}x{check.grid} map; about {FINEST_SIDE_CELLS:.1f} are needed to box at IoU 0.5"
    if input_size is None:
        return f"The reviewed objects are small for the model's map cells ({cells}): a model trained with a larger input size has finer cells."
    suggested = check.suggested_input_size(input_size, limit=MAX_INPUT_SIZE)
    if suggested <= input_size:
        return (f"The reviewed objects are small for the model's map cells ({cells}), and no larger input size than "
                f"{input_size} is available to a train job.")
    cost = (suggested / input_size) ** 2
    return (f"The reviewed objects are small for the model's map cells ({cells}): a model trained with input size {suggested} "
            f"(now {input_size}; the Train form's input size, or `camlabel train NAME --input-size {suggested}`) has cells "
            f"fine enough for them, at about {cost:.1f}x the time per image.")


def review_map_summary(report: dict[str, Any] | None) -> str:
    """Whether a location map was learned from the reviewed boxes and adopted, with its figures on
    the reviewed (image, class) pairs (top-box hits at IoU >= 0.5 and mean IoU, raw maps -> the
    learned map); ``""`` when ``report`` (``calibration["review_map"]``) is absent (older results)."""
    if not isinstance(report, dict) or not report:
        return ""
    verdict = "adopted" if report.get("adopted") else "not adopted"
    plain, learned = report.get("plain"), report.get("learned")
    if isinstance(plain, dict) and isinstance(learned, dict):
        pairs = report.get("pairs")
        of = f" of {int(pairs)} reviewed pairs" if pairs is not None else ""
        images = report.get("images")
        on = f" on {int(images)} images" if images is not None else ""
        detail = (f"hits {int(plain.get('hits', 0))} -> {int(learned.get('hits', 0))}{of}{on}, "
                  f"mean IoU {float(plain.get('mean_iou', 0.0)):.2f} -> {float(learned.get('mean_iou', 0.0)):.2f}")
    else:
        detail = str(report.get("reason") or "no figures")
    return f"location map learned from the reviewed boxes: {verdict} ({detail})"


def learning_summary(params: dict[str, Any], reviewed_images: int, *, preview: bool, input_size: int | None = None) -> str:
    """One line for the dashboard: what was learned from the reviewed boxes (threshold rule, box
    corrections and how many the leave-one-out check declined, box scores (refitted, and weighed by
    the GT-free proposals' support), the location map learned from the images' descriptor codes when
    calibration reports one) and its leave-one-out estimate (reviewed (image, class) pairs whose
    top box moves from a miss to a hit, or back, when each is left out of the choice in turn),
    then, when the reviewed objects are too small for the maps' cells, the input size to train at
    (:func:`resolution_summary`; ``input_size``: the model's, in pixels)."""
    report = params.get("extra", {}).get("calibration", {})
    collection = report.get("collection", {})
    classes = {k: v for k, v in report.items() if k.isdigit()}
    rule = collection.get("params", "base")
    if rule == "base":
        rule_text = "the threshold rule is kept"
    elif rule.get("threshold") is None:
        rule_text = f"collection threshold mean x {rule['mean_factor']:g}"
    else:
        rule_text = f"collection threshold {rule['threshold']:g} of the maximum"
    gain = int(collection.get("rule_loo_hits_gain", 0) if rule != "base" else 0)
    gain += sum(int(v.get("rule_loo_hits_gain", 0)) for v in classes.values() if v.get("params") != "base")
    fitted = [v.get("correction", {}) for v in classes.values() if v.get("correction", {}).get("images")]
    declined = sum(1 for c in fitted if c.get("declined"))
    corrected = len(fitted) - declined
    declined_text = f" ({declined} correction(s) declined: worse when each reviewed image is left out)" if declined else ""
    pairs = int(collection.get("pairs", 0))
    head = "Preview, nothing applied yet: " if preview else ""
    review_map = review_map_summary(report.get("review_map"))
    resolution = resolution_summary(report.get("resolution"), input_size)
    return (f"{head}learned from {reviewed_images} reviewed images: {rule_text}; box size corrected for {corrected} "
            f"class(es){declined_text}; box scores refitted on {report.get('box_scorer', {}).get('fitted_on', 0)} boxes"
            f"{' and weighed by their agreement with the boxes proposed before review' if report.get('proposal_agreement') else ''}"
            f"{'; ' + review_map if review_map else ''}. "
            f"Estimated (leave-one-out): {gain:+d} of {pairs} reviewed image/class pairs localised."
            f"{' ' + resolution if resolution else ''}")
