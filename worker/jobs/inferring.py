"""The infer job: concept maps and proposed boxes for every image of a collection.

Params: :class:`worker.jobs.params.InferParams`: ``model_version_id`` (an id, ``"imagenet"`` for
the built-in ImageNet-1k classifier, or absent for the newest model trained on this collection),
``top_k`` (classes per image when it has no tag the model knows), ``box_params`` (camcore
``BoxParams`` fields; absent: the model version's ``calibration`` (a ``BoxParams`` dict, as
``camcore.calibration`` makes it), else camcore's defaults), ``batch_size``.

Images are visited in id order, ``ctx.chunk_size`` at a time. The images left when the job
starts are listed once and stream through one loader
(:meth:`camcore.localizer.Localizer.localize_files`: on CUDA its processes decode ahead across
chunk boundaries, started once per job), read chunk by chunk; images added while the job runs
get another pass. An image's tags are mapped by category *name* onto the model's classes (read
per chunk, just before the chunk's forward pass); an image with no matching tag gets its top-k
predicted classes (tagged and untagged images share batches), and categories are created for
class names the collection lacks. A file that cannot be read fails its image alone. Per
chunk: maps are stored as blobs first, one float16 ``.npy`` per map (content-addressed, so a
re-run writes the same keys; the review pages paint heatmaps from them), and, when the model
has them (``ddt_cam`` with a descriptor basis), one float16 ``.npy`` of descriptor codes
``[d, h, w]`` per image, named by ``codes_key`` on each of the image's concept-map rows (the
calibrate job learns a location map from them); then one transaction replaces the chunk's
concept-map rows and CAM proposals of this model version and advances the cursor. A chunk that
was interrupted is simply redone.
"""

from __future__ import annotations

import itertools
import os
import time
from array import array
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from sqlalchemy import delete, select, update

from worker.jobs.params import InferParams
from worker.models_cache import ModelVersionMissing, load_model, model_version_for
from worker.queue.context import JobContext, JobFailed
from worker.store.bulk import replace_boxes, upsert_concept_maps
from worker.store.collections_repo import get_or_create_categories
from worker.store.models import Category, ConceptMap, Image, ImageStatus, ImageTag, ModelVersion


def _box_params(chosen: dict[str, Any] | None, version: ModelVersion) -> Any:
    """camcore ``BoxParams`` from ``chosen`` fields, else from the model version's calibration."""
    from camcore.boxes import BoxParams

    if chosen is None and isinstance(version.calibration, dict) and version.calibration:
        # camcore.calibration stores BoxParams.to_dict() itself; a wrapped {"box_params": ...} works too
        calibration = version.calibration
        chosen = calibration.get("box_params") or calibration.get("params") or calibration
    try:
        return BoxParams.from_dict(chosen if isinstance(chosen, dict) else None)
    except (TypeError, ValueError) as exc:
        raise JobFailed(f"bad box parameters: {exc}") from exc


@dataclass
class _Computed:
    """One chunk after the model pass: ``results`` by image id, images that failed to load."""

    ids: list[int]
    results: dict[int, Any]
    failed: list[tuple[int, str]]


class _Files(Sequence[str]):
    """File paths packed into one ``bytes`` (no Python object per path, so the loader processes,
    forked from the job, read a job's million paths without copying them)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        encoded = [os.fsencode(path) for path in paths]
        self._packed = b"".join(encoded)
        self._ends = array("q", itertools.accumulate(len(e) for e in encoded))

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        start = self._ends[index - 1] if index > 0 else 0
        return os.fsdecode(self._packed[start : self._ends[index]])  # IndexError past the end, as a list


@dataclass
class _Remaining:
    """The images left to infer, in id order, when the pass over them starts.

    Attributes:
        ids: image ids (``array('q')``).
        files: the stored file of each image that has a usable one.
        file_rows: for each of ``files`` its index into ``ids`` (ascending).
        unusable: index into ``ids`` -> why that image has no file to read.
    """

    ids: array[int]
    files: _Files
    file_rows: array[int]
    unusable: dict[int, str]


def _remaining(ctx: JobContext, cursor: int) -> _Remaining:
    """Every image of the collection after ``cursor`` (status ok), with its file path."""
    from camcore.images import ImageLoadError

    with ctx.session() as session:
        rows = session.execute(select(Image.id, Image.storage_key).where(Image.collection_id == ctx.collection_id,
                                                                         Image.status == ImageStatus.ok, Image.id > cursor)
                               .order_by(Image.id)).all()
    paths: list[Path] = []
    file_rows = array("q")
    unusable: dict[int, str] = {}
    for row, (_image_id, key) in enumerate(rows):
        try:
            if not key:
                raise ImageLoadError("the image has no stored file")
            paths.append(ctx.runtime.blobs.local_path(key))
            file_rows.append(row)
        except ImageLoadError as exc:
            unusable[row] = exc.reason
        except Exception as exc:  # noqa: BLE001 - one bad key never stops the job
            unusable[row] = f"{type(exc).__name__}: {exc}"
    return _Remaining(ids=array("q", (row[0] for row in rows)), files=_Files(paths), file_rows=file_rows, unusable=unusable)


class _ChunkTags(Sequence[list[int] | None]):
    """Per file of a :class:`_Remaining` the model's classes of its image's tags (``None``: no tag
    the model knows: its predicted classes), read from the database a chunk at a time when the
    localizer first asks for one of the chunk's images (just before the chunk's forward pass)."""

    def __init__(self, ctx: JobContext, remaining: _Remaining, class_index: dict[str, int]) -> None:
        self.ctx = ctx
        self.remaining = remaining
        self.class_index = class_index
        self.chunks: dict[int, dict[int, list[int]]] = {}  # chunk number -> image id -> classes

    def __len__(self) -> int:
        return len(self.remaining.files)

    @overload
    def __getitem__(self, index: int) -> list[int] | None: ...

    @overload
    def __getitem__(self, index: slice) -> list[list[int] | None]: ...

    def __getitem__(self, index: int | slice) -> list[int] | None | list[list[int] | None]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        row = self.remaining.file_rows[index]
        chunk = row // self.ctx.chunk_size
        if chunk not in self.chunks:
            # files are asked for in ascending order (a batch may span chunks): older chunks are done
            self.chunks = {c: tags for c, tags in self.chunks.items() if c >= chunk - 1}
            self.chunks[chunk] = self._read(chunk)
        return self.chunks[chunk].get(self.remaining.ids[row])

    def _read(self, chunk: int) -> dict[int, list[int]]:
        size = self.ctx.chunk_size
        ids = list(self.remaining.ids[chunk * size : (chunk + 1) * size])
        tags: dict[int, set[int]] = {}
        with self.ctx.session() as session:
            for image_id, name in session.execute(select(ImageTag.image_id, Category.name).join(Category, Category.id == ImageTag.category_id)
                                                  .where(ImageTag.image_id.in_(ids))):
                if name in self.class_index:
                    tags.setdefault(image_id, set()).add(self.class_index[name])
        return {image_id: sorted(classes) for image_id, classes in tags.items()}


def _computed_chunks(ctx: JobContext, localizer: Any, remaining: _Remaining, class_index: dict[str, int],
                     top_k: int) -> Generator[_Computed, None, None]:
    """The model's results on ``remaining``, ``ctx.chunk_size`` images at a time, in id order.

    One stream (:meth:`camcore.localizer.Localizer.localize_files`) serves every chunk: its loader
    (processes decoding ahead on CUDA, phased host threads on a CPU) starts once, and tagged and
    untagged images share its batches. A chunk is computed when it is asked for (and, on CUDA, the
    start of the next one with it); closing the iterator stops the loader.
    """
    from camcore.images import ImageLoadError

    stream = localizer.localize_files(remaining.files, _ChunkTags(ctx, remaining, class_index), top_k=top_k)
    ids, file_rows = remaining.ids, remaining.file_rows
    try:
        position = 0  # the next file's
        for start in range(0, len(ids), ctx.chunk_size):
            end = min(start + ctx.chunk_size, len(ids))
            failed = [(ids[row], remaining.unusable[row]) for row in range(start, end) if row in remaining.unusable]
            results: dict[int, Any] = {}
            while position < len(file_rows) and file_rows[position] < end:
                got, outcome = next(stream)
                assert got == position, f"the localizer answered file {got} for {position}"
                image_id = ids[file_rows[position]]
                if isinstance(outcome, ImageLoadError):
                    failed.append((image_id, outcome.reason))
                else:
                    results[image_id] = outcome
                position += 1
            yield _Computed(ids=list(ids[start:end]), results=results, failed=failed)
    finally:
        stream.close()


def _write_chunk(ctx: JobContext, version_id: int, class_names: list[str], chunk: _Computed, done: int, cursor: int,
                 timings: dict[str, float] | None = None) -> int:
    """Store a chunk's maps as blobs, then replace its rows and advance the cursor in one transaction.

    Each map is stored once, as its raw float16 ``.npy`` (the browser paints the heatmap from it);
    an image's descriptor codes (``result.codes``, ``[d, h, w]``), when the model gives them, once
    per image as a float16 ``.npy`` whose key every map row of the image gets as ``codes_key``.
    Returns the number of boxes written (proposals duplicating a reviewed box are not, see
    :func:`worker.store.bulk.replace_boxes`). ``timings``, when given, gets the seconds spent per
    stage added to it: ``encode`` (maps and codes to bytes), ``blob_puts``, ``categories`` (plus failed
    images), ``map_rows``, ``box_rows``, ``commit`` (progress and commit).
    """
    from camcore.concept_maps import encode_codes, encode_map

    clock = _StageClock(timings)
    map_rows: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    box_rows: list[dict[str, Any]] = []
    codes_images: list[int] = []
    codes_payloads: list[bytes] = []
    for image_id, result in chunk.results.items():
        for cls, cam in result.maps.items():
            map_rows.append({"image_id": image_id, "class": class_names[cls]})
            payloads.append(encode_map(cam))
        codes = result.codes  # None: the model has no descriptor basis
        if codes is not None and result.maps:  # no map row, no reference: the blob is not stored
            codes_images.append(image_id)
            codes_payloads.append(encode_codes(codes))
        for box, score, label in zip(result.boxes.tolist(), result.scores.tolist(), result.labels.tolist(), strict=True):
            box_rows.append({"image_id": image_id, "class": class_names[label], "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3],
                             "score": score})
    clock.lap("encode")
    for row, key in zip(map_rows, ctx.runtime.blobs.put_many(payloads, kind="maps", suffix=".npy"), strict=True):
        row["raw_key"] = key
    codes_key = dict(zip(codes_images, ctx.runtime.blobs.put_many(codes_payloads, kind="codes", suffix=".npy"), strict=True))
    for row in map_rows:
        row["codes_key"] = codes_key.get(row["image_id"])
    clock.lap("blob_puts")
    state = {"cursor": cursor, "images_failed": int(ctx.state.get("images_failed", 0)) + len(chunk.failed),
             "boxes": int(ctx.state.get("boxes", 0)) + len(box_rows)}
    assert ctx.collection_id is not None  # the handler refuses a job without a collection
    with ctx.chunk(done=done, state=state) as session:
        category = get_or_create_categories(session, ctx.collection_id, sorted({r["class"] for r in map_rows} | {r["class"] for r in box_rows}))
        for image_id, reason in chunk.failed:
            session.execute(update(Image).where(Image.id == image_id).values(status=ImageStatus.failed, failure_reason=reason))
        clock.lap("categories")
        session.execute(delete(ConceptMap).where(ConceptMap.image_id.in_(chunk.ids), ConceptMap.model_version_id == version_id))
        upsert_concept_maps(session, [{"image_id": r["image_id"], "category_id": category[r["class"]], "model_version_id": version_id,
                                       "raw_key": r["raw_key"], "codes_key": r["codes_key"]} for r in map_rows])
        clock.lap("map_rows")
        written = replace_boxes(session, chunk.ids, version_id, [{"image_id": r["image_id"], "category_id": category[r["class"]],
                                                                  "x1": r["x1"], "y1": r["y1"], "x2": r["x2"], "y2": r["y2"],
                                                                  "score": r["score"]} for r in box_rows])
        state["boxes"] -= len(box_rows) - written  # proposals a reviewed box already covers are not written
        clock.lap("box_rows")
    clock.lap("commit")
    return written


class _StageClock:
    """Adds the seconds since the previous lap to ``timings[stage]`` (does nothing without ``timings``)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.timings is None:
            return
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now


def run_infer_job(ctx: JobContext) -> dict[str, Any]:
    """Handler of ``infer`` jobs (see the module docstring).

    The model pass of chunk ``i + 1`` overlaps the storage writes of chunk ``i`` (one writer
    thread, one chunk in flight, chunks committed in order).
    """
    from camcore.localizer import Localizer

    if ctx.collection_id is None:
        raise JobFailed("an infer job needs a collection")
    collection_id = ctx.collection_id
    infer = ctx.read_params(InferParams)
    top_k = infer.top_k
    with ctx.session() as session:
        try:
            version = model_version_for(session, collection_id, ctx.state.get("model_version_id", infer.model_version_id))
        except ModelVersionMissing as exc:
            raise JobFailed(str(exc)) from exc
        session.expunge(version)
    remaining = _remaining(ctx, int(ctx.state.get("cursor", 0)))
    params = _box_params(infer.box_params, version)
    if "model_version_id" not in ctx.state:
        with ctx.chunk(done=0, state={"model_version_id": version.id, "cursor": 0, "images_failed": 0, "boxes": 0,
                                      "box_params": params.to_dict()}):
            pass
    ctx.set_progress(ctx.done, ctx.done + len(remaining.ids))
    ctx.check()
    try:
        model, spec = load_model(version, ctx.runtime.blobs, ctx.device)
    except Exception as exc:  # noqa: BLE001 - unreadable checkpoint / weights: a clear job failure
        raise JobFailed(f"could not load model version {version.id}: {exc}") from exc
    localizer = Localizer(model, spec, device=ctx.device, params=params, batch_size=infer.batch_size)
    class_index = {name: i for i, name in enumerate(spec.class_names)}
    cursor = int(ctx.state.get("cursor", 0))
    done = ctx.done
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"camlabel-infer-{ctx.job_id}")
    pending: Future[int] | None = None
    try:
        while len(remaining.ids):
            chunks = _computed_chunks(ctx, localizer, remaining, class_index, top_k)
            try:
                while True:
                    ctx.check()
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    done += len(chunk.ids)
                    cursor = chunk.ids[-1]
                    if pending is not None:
                        pending.result()  # the previous chunk's write; its error surfaces here
                    pending = writer.submit(_write_chunk, ctx, version.id, list(spec.class_names), chunk, done, cursor)
            finally:
                chunks.close()  # stops the loader (also on cancel, lost lease or error)
            if pending is not None:
                pending.result()
                pending = None
            remaining = _remaining(ctx, cursor)  # images added while the job ran
            if len(remaining.ids):
                ctx.set_progress(ctx.done, ctx.done + len(remaining.ids))
    finally:
        writer.shutdown(wait=True)  # a chunk computed before a cancel is still committed
        localizer.close()
    return {"model_version_id": version.id, "images": ctx.done, "images_failed": int(ctx.state.get("images_failed", 0)),
            "boxes": int(ctx.state.get("boxes", 0))}
