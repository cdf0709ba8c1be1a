"""Pseudo-label quality on any collection: the product's own code path, ground truth only to score.

    .venv/bin/python bench/quality.py [--dataset DIR ...] [--reviewed N [--seeds S]] [--random-tags K] [--cache DIR]

Without ``--dataset``, every collection under ``../shared/datasets/`` is run. Two layouts:

- **manifest + COCO**: ``images/``, ``manifest.csv`` (``file_name,tags``, tags ``;``-separated, read
  by the import's own :func:`worker.import_sources.read_manifest`) and ``gt.json`` (COCO; images
  matched by ``file_name``; ``bbox`` xywh -> xyxy; boxes scaled when the decoded image's size
  differs from the ``width``/``height`` written there);
- **VOC folders**: ``<class>/images/*.jpg`` with ``<class>/annotations/<stem>.xml``; the tag of
  an image is its folder (``<path>``/``<filename>`` in the XML are ignored: they name other
  machines; boxes are scaled when ``<size>`` differs from the decoded image).

What the product sees of a collection is a :class:`Collection`: image files and tags, nothing
else. Three small functions are the product path, the same camcore calls the jobs make (swap their
internals when the jobs change):

- :func:`train` -- the train job (``worker/jobs/training.py``): ``train_head`` (linear, frozen
  backbone) on the tagged images, then the objectness statistics it stores in ``spec.extra``;
- :func:`infer` -- the infer job (``worker/jobs/inferring.py``): a
  :class:`camcore.localizer.Localizer` with the job's ``BoxParams`` localising each image for its
  tags (an untagged image: its top predicted class);
- :func:`learn_from_review` -- the calibrate job (``worker/jobs/calibrating.py``):
  ``camcore.calibration.calibrate`` on the reviewed images' stored maps, then ``apply`` to the
  others' stored maps (float16, as stored).

Ground truth is read by :func:`load_ground_truth`, called only once the product path has run, for
scoring (and, with ``--reviewed``, as the reviewer's boxes on the drawn images only).

Per collection and per class it prints CorLoc@0.5, AP50, AP (COCO .50:.95), MaxBoxAccV2, the
box-score ranking quality (AUROC of the score for "IoU >= 0.5 with a ground-truth box of its class";
precision of the top-scored half of the boxes next to the precision of all boxes), boxes proposed
vs ground-truth objects, and the best centred box (40/60/80% of each side). ``--reviewed N --seeds
S`` draws N images in total (seeded; seeds ``seed .. seed+S-1``), hands their ground truth to
:func:`learn_from_review` as reviewed boxes and scores the other images before and after. A
summary table puts the collections side by side; the last line is machine-readable::

    quality: corloc=<x> ap50=<x> auroc=<x> top_half_precision=<x> [corloc_after_review=<x>]

(means over the collections run). ``--random-tags K`` replaces each image's one tag by one of K
tags drawn at random (the objects follow their image's new tag when scored): a collection whose
tags the classifier cannot tell apart, as fine-grained tags the features do not separate. The trained model and the per-image results (boxes, scores,
stored maps) are cached under ``--cache``, keyed by collection, input size and a hash of what they
depend on (files, tags, seed, box params, camcore's source and the product-path function's
source), so a second run only scores; pooled training features are cached by ``train_head``
itself (keyed by file identity).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import random
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import camcore
from camcore.boxes import BoxParams
from camcore.localizer import ImageResult
from camcore.models import GapClassifier, ModelSpec
from camcore.resolution import FINEST_SIDE_CELLS, check_resolution, map_grids
from camcore.separability import SPEC_KEY as SEPARABILITY_KEY
from camcore.threshold_choice import REPORT_KEY, fit_threshold_choice, model_box_params, rule_text

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "camlabel-quality-cache"
CENTRE_FRACTIONS = (0.4, 0.6, 0.8)
MBA_THRESHOLDS = tuple(i / 50 for i in range(50))
LOAD_CHUNK = 64  # images decoded at a time by infer (bounds memory, as the job's chunks do)

Predictions = tuple[Tensor, Tensor, Tensor]  # (boxes[N, 4] xyxy px, scores[N], labels[N])
Reviewed = dict[int, list[tuple[int, list[float]]]]  # image index -> [(class index, [x1, y1, x2, y2])]


class DatasetError(ValueError):
    """A collection folder that cannot be read; the message says what is wrong."""


# ---------------------------------------------------------------------------------------------
# Collections: what the product sees (files and tags)


@dataclass(frozen=True)
class Sample:
    """One image as the product sees it: its file and its tags (class indices)."""

    path: Path
    tags: tuple[int, ...]


@dataclass(frozen=True)
class Collection:
    """A collection as imported: class names (sorted, as categories are created) and samples.

    Holds no ground truth; :func:`load_ground_truth` reads that for scoring."""

    name: str
    root: Path
    layout: str  # "coco" | "voc"
    class_names: tuple[str, ...]
    samples: tuple[Sample, ...]
    # with --random-tags: per sample the class name its tag replaced (the ground truth's name of
    # the objects that now carry the random tag); empty otherwise
    replaced: tuple[str, ...] = ()

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.samples]

    @property
    def tags(self) -> list[list[int]]:
        return [list(s.tags) for s in self.samples]


def detect_layout(root: Path) -> str:
    """``"coco"`` or ``"voc"`` for a collection folder; :class:`DatasetError` otherwise."""
    if not root.is_dir():
        raise DatasetError(f"--dataset {root}: not a folder")
    if (root / "manifest.csv").is_file() or (root / "gt.json").is_file():
        missing = [n for n in ("images", "manifest.csv", "gt.json") if not (root / n).exists()]
        if missing:
            raise DatasetError(f"--dataset {root}: manifest layout needs images/, manifest.csv and gt.json; missing {missing}")
        return "coco"
    if any((p / "images").is_dir() for p in root.iterdir() if p.is_dir()):
        return "voc"
    raise DatasetError(f"--dataset {root}: neither images/ + manifest.csv + gt.json nor <class>/images/ folders")


def find_collections(parent: Path) -> list[Path]:
    """The collection folders directly under ``parent`` (sorted by name)."""
    if not parent.is_dir():
        raise DatasetError(f"no datasets folder at {parent}; pass --dataset DIR")
    found = []
    for p in sorted(parent.iterdir()):
        try:
            detect_layout(p)
        except DatasetError:
            continue
        found.append(p)
    if not found:
        raise DatasetError(f"no collection folders under {parent}")
    return found


def load_collection(root: Path) -> Collection:
    """Image files and tags of the collection at ``root`` (either layout); reads no ground truth."""
    root = Path(root)
    layout = detect_layout(root)
    if layout == "coco":
        return _manifest_collection(root)
    return _voc_collection(root)


def _manifest_collection(root: Path) -> Collection:
    from worker.import_sources import IMAGE_SUFFIXES, ImportSourceError, read_manifest

    try:
        rows = read_manifest(root / "manifest.csv")
    except ImportSourceError as exc:
        raise DatasetError(str(exc)) from exc
    merged: dict[str, list[str]] = {}
    for rel, tags in rows:  # a file listed twice gets the tags of both, as the import does
        merged.setdefault(rel, [])
        merged[rel].extend(t for t in tags if t not in merged[rel])
    missing = [rel for rel in merged if not (root / "images" / rel).is_file()]
    if missing:
        print(f"{root.name}: {len(missing)} manifest rows name no file under images/ (not imported): {missing[:3]}",
              file=sys.stderr)
    kept = {rel: tags for rel, tags in merged.items() if rel not in missing and Path(rel).suffix.lower() in IMAGE_SUFFIXES}
    if not kept:
        raise DatasetError(f"--dataset {root}: manifest.csv names no image file under images/")
    class_names = tuple(sorted({t for tags in kept.values() for t in tags}))
    index = {n: i for i, n in enumerate(class_names)}
    samples = tuple(Sample(root / "images" / rel, tuple(sorted(index[t] for t in tags))) for rel, tags in sorted(kept.items()))
    return Collection(root.name, root, "coco", class_names, samples)


def _voc_collection(root: Path) -> Collection:
    from worker.import_sources import IMAGE_SUFFIXES

    class_names = tuple(sorted(p.name for p in root.iterdir() if (p / "images").is_dir()))
    samples = []
    for c, name in enumerate(class_names):
        for img_path in sorted((root / name / "images").iterdir()):
            if img_path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(img_path, (c,)))
    if not samples:
        raise DatasetError(f"--dataset {root}: no image files under <class>/images/")
    return Collection(root.name, root, "voc", class_names, tuple(samples))


def with_random_tags(collection: Collection, k: int, seed: int = 0) -> Collection:
    """``collection`` with each image's tag replaced by one of ``k`` tags drawn at random (seeded):
    tags the classifier cannot tell apart, as fine-grained tags the features do not separate. The
    objects of an image's former class are scored as objects of its new tag.

    Raises:
        DatasetError: ``k < 2``, or an image has no tag or several (its objects could not follow one tag).
    """
    if k < 2:
        raise DatasetError(f"--random-tags needs at least 2 tags, got {k}")
    several = [s.path.name for s in collection.samples if len(s.tags) != 1]
    if several:
        raise DatasetError(f"--random-tags needs one tag per image; {collection.name} has {len(several)} images "
                           f"with none or several (e.g. {several[:3]})")
    rng = random.Random(seed)
    names = tuple(f"random{i:02d}" for i in range(k))
    samples = tuple(Sample(s.path, (rng.randrange(k),)) for s in collection.samples)
    replaced = tuple(collection.class_names[s.tags[0]] for s in collection.samples)
    return Collection(f"{collection.name}-random{k}", collection.root, collection.layout, names, samples, replaced)


# ---------------------------------------------------------------------------------------------
# Ground truth: read only for scoring


@dataclass
class GroundTruth:
    """Per image ``(boxes[M, 4] xyxy pixels of the decoded image, labels[M])``; labels index
    ``class_names`` (the collection's classes, then any class only the ground truth names)."""

    boxes: list[Tensor]
    labels: list[Tensor]
    class_names: tuple[str, ...]

    def pairs(self) -> list[tuple[Tensor, Tensor]]:
        return list(zip(self.boxes, self.labels, strict=True))


def parse_voc(path: Path) -> tuple[list[list[float]], list[str], tuple[int, int]]:
    """``(boxes xyxy pixels, class names, (width, height) as written)`` of one VOC file.

    ``<path>``/``<filename>`` are ignored (they name other machines); objects without a
    ``<bndbox>`` are skipped."""
    root = ET.parse(path).getroot()
    size = root.find("size")
    wh = (int(float(size.findtext("width", "0"))), int(float(size.findtext("height", "0")))) if size is not None else (0, 0)
    boxes, names = [], []
    for o in root.findall("object"):
        bb = o.find("bndbox")
        if bb is None:
            continue
        boxes.append([float(bb.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")])
        names.append((o.findtext("name") or "").strip())
    return boxes, names, wh


def _scaled(boxes: list[list[float]], written: tuple[int, int], decoded: tuple[int, int] | None) -> Tensor:
    t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if decoded is not None and written[0] > 0 and written[1] > 0 and tuple(written) != tuple(decoded):
        sx, sy = decoded[0] / written[0], decoded[1] / written[1]  # drawn on another orientation/scale
        t = t * torch.tensor([sx, sy, sx, sy])
    return t


def load_ground_truth(collection: Collection, image_sizes: Sequence[tuple[int, int] | None]) -> GroundTruth:
    """Ground-truth boxes of every sample, in the pixels of the decoded image.

    Args:
        collection: from :func:`load_collection`.
        image_sizes: per sample the decoded (width, height) (``ImageResult.image_size``), or
            ``None`` for an unreadable image (its boxes are kept as written).
    """
    if len(image_sizes) != len(collection.samples):
        raise ValueError(f"{len(image_sizes)} image sizes for {len(collection.samples)} images")
    raw: list[tuple[list[list[float]], list[str], tuple[int, int]]] = []
    if collection.layout == "coco":
        data = json.loads((collection.root / "gt.json").read_text(encoding="utf-8"))
        cats = {int(c["id"]): str(c["name"]).strip() for c in data.get("categories", [])}
        by_name: dict[str, dict[str, Any]] = {}
        for im in data.get("images", []):
            by_name.setdefault(str(im["file_name"]), im)
            by_name.setdefault(Path(str(im["file_name"])).name, im)
        anns: dict[int, list[dict[str, Any]]] = {}
        for a in data.get("annotations", []):
            anns.setdefault(int(a["image_id"]), []).append(a)
        for s in collection.samples:
            rel = s.path.relative_to(collection.root / "images").as_posix()
            im = by_name.get(rel) or by_name.get(s.path.name)
            if im is None:  # not in gt.json: an image without objects
                raw.append(([], [], (0, 0)))
                continue
            mine = [a for a in anns.get(int(im["id"]), []) if not a.get("iscrowd", 0)]
            boxes = [[float(a["bbox"][0]), float(a["bbox"][1]), float(a["bbox"][0]) + float(a["bbox"][2]),
                      float(a["bbox"][1]) + float(a["bbox"][3])] for a in mine]
            raw.append((boxes, [cats.get(int(a["category_id"]), str(a["category_id"])) for a in mine],
                        (int(im.get("width") or 0), int(im.get("height") or 0))))
    else:
        for s in collection.samples:
            ann = s.path.parent.parent / "annotations" / (s.path.stem + ".xml")
            raw.append(parse_voc(ann) if ann.is_file() else ([], [], (0, 0)))
    if collection.replaced:  # random tags: the objects of the former class carry the image's new tag
        raw = [(boxes, [collection.class_names[s.tags[0]] if n == old else n for n in found], wh)
               for (boxes, found, wh), s, old in zip(raw, collection.samples, collection.replaced, strict=True)]
    names = list(collection.class_names)
    for _b, found, _wh in raw:  # classes only the ground truth names: never tagged, always missed
        names.extend(sorted({n for n in found if n not in names}))
    index = {n: i for i, n in enumerate(names)}
    boxes_out, labels_out = [], []
    for (boxes, found, wh), size in zip(raw, image_sizes, strict=True):
        boxes_out.append(_scaled(boxes, wh, size))
        labels_out.append(torch.tensor([index[n] for n in found], dtype=torch.long))
    return GroundTruth(boxes_out, labels_out, tuple(names))


# ---------------------------------------------------------------------------------------------
# The product path: the same camcore calls the jobs make


def train(paths: Sequence[Path], tags: Sequence[Sequence[int]], class_names: Sequence[str], *,
          arch: str = "efficientnet_lite0", input_size: int | None = None, seed: int = 0,
          device: str = "cpu", cache_dir: Path | None = None) -> tuple[GapClassifier, ModelSpec]:
    """What the train job does: a linear GAP head on the tagged images, objectness statistics, then
    the collection's box threshold chosen without ground truth (:mod:`camcore.threshold_choice`).

    Images without tags are left out (the job trains on tagged images); images that fail to load
    are skipped by ``train_head`` and left out of the objectness fit, as the job does.

    Returns:
        ``(model, spec)`` with ``spec.extra`` as the job stores it.
    """
    from camcore.objectness import SPEC_KEY, fit_objectness
    from camcore.training import train_head

    tagged = [i for i, t in enumerate(tags) if t]
    if not tagged:
        raise ValueError("no tagged images to train on")
    t_paths = [paths[i] for i in tagged]
    t_tags = [sorted(set(tags[i])) for i in tagged]
    spec_kwargs: dict[str, Any] = {"arch": arch, "class_names": list(class_names)}
    if input_size:
        spec_kwargs["input_size"] = int(input_size)
    weights = None if arch == "tiny_cnn" else "imagenet"
    trained = train_head(ModelSpec(**spec_kwargs), [str(p) for p in t_paths], t_tags, mode="linear", seed=seed,
                         device=device, weights=weights, cache_dir=cache_dir)
    skipped = {int(item["index"]) for item in trained.metrics.get("skipped", [])}
    usable = [n for n in range(len(t_paths)) if n not in skipped]
    stats = fit_objectness(trained.model, trained.spec, [str(t_paths[n]) for n in usable], [t_tags[n] for n in usable],
                           device=device)
    trained.spec.extra = {**dict(trained.spec.extra or {}), SPEC_KEY: stats.to_dict()}
    choice = fit_threshold_choice(trained.model, trained.spec, [str(t_paths[n]) for n in usable],
                                  [t_tags[n] for n in usable], device=device, seed=seed)
    trained.spec.extra = choice.stored_in(trained.spec.extra)
    return trained.model, trained.spec


def infer(model: GapClassifier, spec: ModelSpec, paths: Sequence[Path], tags: Sequence[Sequence[int]],
          params: BoxParams, *, device: str = "cpu", batch_size: int = 16) -> list[ImageResult | None]:
    """What the infer job does: a Localizer with the job's box params over every image.

    Images are decoded as the job decodes them (reduced-scale JPEG decoding no smaller than the
    network input); an image with tags is localised for its tags, one without for its top-1
    predicted class.

    Returns:
        Per image its :class:`ImageResult`, or ``None`` when it cannot be loaded (the job marks
        it failed).
    """
    from camcore.images import ImageLoadError
    from camcore.localizer import Localizer

    if len(paths) != len(tags):
        raise ValueError(f"{len(tags)} tag lists for {len(paths)} images")
    localizer = Localizer(model, spec, device=device, params=params, batch_size=batch_size)
    out: list[ImageResult | None] = [None] * len(paths)
    try:
        for start in range(0, len(paths), LOAD_CHUNK):
            idx = list(range(start, min(start + LOAD_CHUNK, len(paths))))
            loaded = localizer.load_images([str(paths[i]) for i in idx])
            ok = [(i, im) for i, im in zip(idx, loaded, strict=True) if not isinstance(im, ImageLoadError)]
            for i, im in zip(idx, loaded, strict=True):
                if isinstance(im, ImageLoadError):
                    print(f"unreadable {paths[i]}: {im} (scored as a miss)", file=sys.stderr)
            tagged = [(i, im) for i, im in ok if tags[i]]
            untagged = [(i, im) for i, im in ok if not tags[i]]
            if tagged:
                res = localizer.localize([im for _, im in tagged], [sorted(set(tags[i])) for i, _ in tagged])
                for (i, _), r in zip(tagged, res, strict=True):
                    out[i] = r
            if untagged:
                res = localizer.localize([im for _, im in untagged], None, top_k=1)
                for (i, _), r in zip(untagged, res, strict=True):
                    out[i] = r
    finally:
        localizer.close()
    return out


def learn_from_review(results: Mapping[int, ImageResult], reviewed: Reviewed, params: BoxParams) -> dict[int, Predictions]:
    """What the calibrate job does: fit on the reviewed images' stored maps and descriptor codes,
    re-propose the others.

    Args:
        results: image key -> its infer result (``maps`` as stored: float16 values).
        reviewed: image key -> the reviewer's boxes ``[(class index, [x1, y1, x2, y2])]``.
        params: the box params the maps were boxed with.

    Returns:
        For every key of ``results`` not in ``reviewed``: ``(boxes[N, 4], scores[N], labels[N])``;
        scores from the maps alone (the classes are tags), as in the job.
    """
    from camcore.calibration import apply, calibrate

    sizes = {k: r.image_size for k, r in results.items()}
    codes = {k: r.codes for k, r in results.items() if r.codes is not None}
    fitted = calibrate({k: results[k].maps for k in reviewed if k in results}, sizes, reviewed, params, codes_by_image=codes)
    others = [k for k in results if k not in reviewed]
    return apply({k: results[k].maps for k in others}, {k: sizes[k] for k in others}, fitted, codes_by_image=codes)


# ---------------------------------------------------------------------------------------------
# Caching: the trained model and the per-image results


def _source_digest(*funcs: Callable[..., Any]) -> str:
    """Hash of camcore's source files, its subpackages included (but ``metrics.py``: scoring only),
    and of the given functions' source: a change to the box rules or scores makes new results."""
    h = hashlib.sha256()
    package = Path(camcore.__file__).parent
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).as_posix() == "metrics.py":
            continue
        h.update(path.relative_to(package).as_posix().encode())
        h.update(path.read_bytes())
    for f in funcs:
        h.update(inspect.getsource(f).encode())
    return h.hexdigest()


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _file_identity(path: Path) -> list[Any]:
    try:
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), None, None]


def _stored(result: ImageResult) -> dict[str, Any]:
    """An infer result as the job stores it: maps and descriptor codes as float16 (``encode_map``,
    ``encode_codes``)."""
    return {"boxes": result.boxes, "scores": result.scores, "labels": result.labels, "class_scores": result.class_scores,
            "image_size": list(result.image_size), "maps": {int(c): m.half() for c, m in result.maps.items()},
            "codes": None if result.codes is None else result.codes.half()}


def _restored(data: dict[str, Any]) -> ImageResult:
    codes = data.get("codes")
    return ImageResult(data["boxes"], data["scores"], data["labels"], {int(c): m.float() for c, m in data["maps"].items()},
                       data["class_scores"], (int(data["image_size"][0]), int(data["image_size"][1])),
                       None if codes is None else codes.float())


@dataclass
class Timing:
    """Seconds spent in the product path (``None``: taken from the cache)."""

    train_s: float | None = None
    infer_s: float | None = None
    images: int = 0

    def describe(self) -> str:
        parts = [f"train {self.train_s:.0f}s" if self.train_s is not None else "model cached"]
        if self.infer_s is not None:
            parts.append(f"infer {self.infer_s:.0f}s ({self.images / max(self.infer_s, 1e-9):.1f} images/s)")
        else:
            parts.append("results cached")
        return ", ".join(parts)


@dataclass
class RunConfig:
    """Options of a harness run (see ``--help``)."""

    cache: Path = DEFAULT_CACHE
    arch: str = "efficientnet_lite0"
    input_size: int | None = None
    seed: int = 0
    device: str = "cpu"
    box_params: dict[str, Any] = field(default_factory=dict)
    use_cache: bool = True


@dataclass
class Product:
    """What the product path gave for a collection; ``stem``: cache path prefix of ``results``
    (scores derived from them alone are cached next to it)."""

    spec: ModelSpec
    results: list[ImageResult | None]
    stem: Path


def box_params(spec: ModelSpec, cfg: RunConfig) -> BoxParams:
    """The infer job's params: ``--box-params`` when given (a job's ``box_params``), else the model
    version's starting calibration, which is the model's GT-free defaults."""
    return BoxParams.from_dict(cfg.box_params) if cfg.box_params else model_box_params(spec)


def product_results(collection: Collection, cfg: RunConfig, timing: Timing) -> Product:
    """Train (or load the cached model) and infer (or load the cached results) on ``collection``.

    The model goes through a checkpoint file as between the train and infer jobs."""
    from camcore.models import load_checkpoint, save_checkpoint

    size_key = cfg.input_size or ModelSpec(arch=cfg.arch, class_names=["x"]).input_size
    folder = cfg.cache / f"{collection.name}-{size_key}"
    folder.mkdir(parents=True, exist_ok=True)
    model_key = _digest({"arch": cfg.arch, "input_size": size_key, "seed": cfg.seed, "classes": collection.class_names,
                         "files": [_file_identity(p) for p in collection.paths], "tags": collection.tags,
                         "code": _source_digest(train)})
    ckpt = folder / f"model-{model_key}.pt"
    if not (cfg.use_cache and ckpt.is_file()):
        t = time.perf_counter()
        model, spec = train(collection.paths, collection.tags, collection.class_names, arch=cfg.arch, input_size=cfg.input_size,
                            seed=cfg.seed, device=cfg.device, cache_dir=cfg.cache / "features")
        timing.train_s = time.perf_counter() - t
        save_checkpoint(model, spec, ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)
    model, spec = load_checkpoint(ckpt, map_location=cfg.device)
    params = box_params(spec, cfg)
    results_key = _digest({"model": model_key, "params": params.to_dict(), "code": _source_digest(infer)})
    stored = folder / f"results-{results_key}.pt"
    if cfg.use_cache and stored.is_file():
        data = torch.load(stored, map_location="cpu", weights_only=True)
    else:
        t = time.perf_counter()
        results = infer(model, spec, collection.paths, collection.tags, params, device=cfg.device)
        timing.infer_s = time.perf_counter() - t
        timing.images = len(results)
        data = [None if r is None else _stored(r) for r in results]
        torch.save(data, stored.with_suffix(".tmp"))
        stored.with_suffix(".tmp").replace(stored)
    return Product(spec, [None if d is None else _restored(d) for d in data], stored.with_suffix(""))


# ---------------------------------------------------------------------------------------------
# Scoring


def _empty() -> Predictions:
    return torch.zeros((0, 4)), torch.zeros((0,)), torch.zeros((0,), dtype=torch.long)


def _preds(r: ImageResult | None) -> Predictions:
    return _empty() if r is None else (r.boxes, r.scores, r.labels)


def _only(p: Predictions, cls: int) -> Predictions:
    keep = p[2] == cls
    return p[0][keep], p[1][keep], p[2][keep]


@dataclass
class Scores:
    """Quality of a set of boxes against the ground truth (``nan``: not defined, e.g. no boxes)."""

    images: int
    objects: int
    boxes: int
    corloc: float
    ap50: float
    ap: float
    mba: float
    auroc: float
    top_half_precision: float
    precision: float


def _mba_table(results: Sequence[ImageResult | None], gt: GroundTruth, cache_stem: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """MaxBoxAccV2's per-pair table (:func:`camcore.metrics.box_acc_table`) and each pair's class;
    cached next to the results (keyed by the ground truth and thresholds) when ``cache_stem`` is given."""
    from camcore.metrics import box_acc_table

    pair_maps, pair_gt, pair_sizes, pair_class = [], [], [], []
    for r, (gb, gl) in zip(results, gt.pairs(), strict=True):
        for c in sorted(set(gl.tolist())):
            m = None if r is None else r.maps.get(c)
            pair_maps.append(torch.zeros(2, 2) if m is None else m)  # no map: scored as a miss
            pair_sizes.append((2, 2) if r is None else r.image_size)
            pair_gt.append(gb[gl == c])
            pair_class.append(c)
    classes = np.asarray(pair_class, dtype=np.int64)
    file = None
    if cache_stem is not None:
        h = hashlib.sha256(repr(MBA_THRESHOLDS).encode())
        for b, lab in gt.pairs():
            h.update(b.numpy().tobytes())
            h.update(lab.numpy().tobytes())
        file = cache_stem.parent / f"{cache_stem.name}-mba-{h.hexdigest()[:16]}.npy"
        if file.is_file():
            table = np.load(file)
            if table.shape[0] == len(classes):
                return table, classes
    table = box_acc_table(pair_maps, pair_gt, pair_sizes, thresholds=MBA_THRESHOLDS)
    if file is not None:
        np.save(file, table)
    return table, classes


def score(results: Sequence[ImageResult | None], gt: GroundTruth, num_classes: int, *,
          cache_stem: Path | None = None) -> dict[int | None, Scores]:
    """Scores of the whole collection (key ``None``) and of each class with ground truth.

    Args:
        results: per image the infer result (``None``: unreadable, no boxes).
        gt: from :func:`load_ground_truth`, same order.
        num_classes: classes of the collection (labels ``>= num_classes`` are ground-truth-only).
        cache_stem: where the results are cached (:class:`Product`): the MaxBoxAccV2 table, the
            slow part, is cached next to them.
    """
    from camcore.metrics import auroc, box_correctness, coco_ap, corloc, max_box_acc_from_table, top_fraction_precision

    preds = [_preds(r) for r in results]
    pairs = gt.pairs()
    k = len(gt.class_names)
    ap = coco_ap(preds, pairs, num_classes=k, per_class=True)
    box_scores, correct, box_labels = box_correctness(preds, pairs)
    table, pair_class_arr = _mba_table(results, gt, cache_stem)

    def nan_if_none(v: float | None) -> float:
        return float("nan") if v is None else float(v)

    out: dict[int | None, Scores] = {
        None: Scores(
            images=len(results), objects=sum(len(gl) for _, gl in pairs), boxes=len(box_scores),
            corloc=corloc(preds, pairs), ap50=nan_if_none(ap["AP50"]), ap=nan_if_none(ap["AP"]),
            mba=max_box_acc_from_table(table, thresholds=MBA_THRESHOLDS)["max_box_acc_v2"],
            auroc=auroc(box_scores, correct), top_half_precision=top_fraction_precision(box_scores, correct),
            precision=float(correct.mean()) if len(correct) else float("nan"))
    }
    for c in sorted({int(c) for _, gl in pairs for c in gl.tolist()} | set(range(num_classes))):
        with_c = [i for i, (_, gl) in enumerate(pairs) if bool((gl == c).any())]
        mine = box_labels == c
        per = ap["per_class"].get(c, {"AP": float("nan"), "AP50": float("nan")})
        out[c] = Scores(
            images=len(with_c), objects=int(sum(int((gl == c).sum()) for _, gl in pairs)), boxes=int(mine.sum()),
            corloc=corloc([_only(preds[i], c) for i in with_c], [(pairs[i][0][pairs[i][1] == c], pairs[i][1][pairs[i][1] == c])
                                                               for i in with_c]),
            ap50=per["AP50"], ap=per["AP"],
            mba=max_box_acc_from_table(table[pair_class_arr == c], thresholds=MBA_THRESHOLDS)["max_box_acc_v2"],
            auroc=auroc(box_scores[mine], correct[mine]), top_half_precision=top_fraction_precision(box_scores[mine], correct[mine]),
            precision=float(correct[mine].mean()) if mine.any() else float("nan"))
    return out


def centred_boxes(results: Sequence[ImageResult | None], tags: Sequence[Sequence[int]], fraction: float) -> list[Predictions]:
    """Per image one centred box covering ``fraction`` of each side, for each of its tags."""
    out = []
    for r, t in zip(results, tags, strict=True):
        if r is None or not t:
            out.append(_empty())
            continue
        w, h = r.image_size
        box = [w * (1 - fraction) / 2, h * (1 - fraction) / 2, w * (1 + fraction) / 2, h * (1 + fraction) / 2]
        out.append((torch.tensor([box] * len(t)), torch.ones(len(t)), torch.tensor(sorted(t), dtype=torch.long)))
    return out


def centred_baseline(results: Sequence[ImageResult | None], tags: Sequence[Sequence[int]], gt: GroundTruth) -> dict[float, float]:
    """CorLoc@0.5 of the centred box at each of :data:`CENTRE_FRACTIONS`."""
    from camcore.metrics import corloc

    return {f: corloc(centred_boxes(results, tags, f), gt.pairs()) for f in CENTRE_FRACTIONS}


@dataclass
class ReviewDraw:
    """One seeded draw of reviewed images and the scores on the other images."""

    seed: int
    drawn: list[int]
    scored: int
    corloc_before: float
    corloc_after: float
    ap50_before: float
    ap50_after: float
    auroc_before: float = float("nan")
    auroc_after: float = float("nan")
    top_half_before: float = float("nan")
    top_half_after: float = float("nan")
    median_side_cells: float = float("nan")  # the reviewed boxes in cells of the maps (camcore.resolution)



def simulate_review(results: Sequence[ImageResult | None], gt: GroundTruth, num_classes: int, n: int,
                    seeds: Sequence[int], params: BoxParams,
                    learn: Callable[[Mapping[int, ImageResult], Reviewed, BoxParams], dict[int, Predictions]] = learn_from_review,
                    ) -> list[ReviewDraw]:
    """Per seed: draw ``n`` readable images, hand their ground truth to ``learn`` as the reviewer's
    boxes, score the other images before and after (CorLoc@0.5, AP50, box AUROC, top-half precision)."""
    from camcore.metrics import auroc, box_correctness, coco_ap, corloc, top_fraction_precision

    stored: dict[int, ImageResult] = {i: r for i, r in enumerate(results) if r is not None}
    readable = sorted(stored)
    if not 1 <= n < len(readable):
        raise ValueError(f"--reviewed must be between 1 and {len(readable) - 1} (readable images), got {n}")
    pairs = gt.pairs()
    draws = []
    for seed in seeds:
        drawn = sorted(random.Random(seed).sample(readable, n))
        reviewed: Reviewed = {  # the reviewer's boxes: ground truth of the drawn images, of the model's classes
            i: [(int(lab), [float(v) for v in box]) for box, lab in zip(gt.boxes[i].tolist(), gt.labels[i].tolist(), strict=True) if lab < num_classes]
            for i in drawn
        }
        after = learn(stored, reviewed, params)
        sides = check_resolution(reviewed, {i: stored[i].image_size for i in drawn},
                                 map_grids({i: stored[i].maps for i in drawn}))
        rest = [i for i in range(len(results)) if i not in reviewed]
        truth = [pairs[i] for i in rest]
        before_p = [_preds(results[i]) for i in rest]
        after_p = [after.get(i, _empty()) for i in rest]
        k = len(gt.class_names)
        ranked = [box_correctness(p, truth)[:2] for p in (before_p, after_p)]  # the box score, refitted after review
        draws.append(ReviewDraw(seed, drawn, len(rest), corloc(before_p, truth), corloc(after_p, truth),
                                float(coco_ap(before_p, truth, num_classes=k)["AP50"] or 0.0),
                                float(coco_ap(after_p, truth, num_classes=k)["AP50"] or 0.0),
                                auroc(*ranked[0]), auroc(*ranked[1]),
                                top_fraction_precision(*ranked[0]), top_fraction_precision(*ranked[1]),
                                sides.median_side_cells if sides.boxes else float("nan")))
    return draws


# ---------------------------------------------------------------------------------------------
# Running and reporting


@dataclass
class CollectionReport:
    """Everything printed about one collection."""

    collection: Collection
    spec: ModelSpec
    timing: Timing
    unreadable: int
    scores: dict[int | None, Scores]
    class_names: tuple[str, ...]
    centred: dict[float, float]
    review: list[ReviewDraw]


def run_collection(collection: Collection, cfg: RunConfig, *, reviewed: int = 0, seeds: Sequence[int] = ()) -> CollectionReport:
    """The product path on ``collection`` (cached), then ground truth, scores and the review simulation."""
    timing = Timing()
    product = product_results(collection, cfg, timing)
    spec, results = product.spec, product.results
    # only now is the ground truth read, in the decoded images' pixels
    gt = load_ground_truth(collection, [None if r is None else r.image_size for r in results])
    k = len(collection.class_names)
    params = box_params(spec, cfg)
    review = simulate_review(results, gt, k, reviewed, seeds, params) if reviewed else []
    scores = score(results, gt, k, cache_stem=product.stem if cfg.use_cache else None)
    return CollectionReport(collection, spec, timing, sum(r is None for r in results), scores, gt.class_names,
                            centred_baseline(results, collection.tags, gt), review)


def _f(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def best_centred(centred: Mapping[float, float]) -> tuple[float, float]:
    """``(fraction, CorLoc)`` of the best centred box (the smaller fraction on a tie)."""
    frac = max(sorted(centred), key=lambda f: (-1.0 if math.isnan(centred[f]) else centred[f]))
    return frac, centred[frac]


def collection_table(rep: CollectionReport) -> str:
    """The Markdown report of one collection: per-class table, centred box, review simulation."""
    c = rep.collection
    lines = [f"### {c.name}", "",
             f"{len(c.samples)} images ({rep.unreadable} unreadable, scored as misses), {len(c.class_names)} classes, "
             f"{rep.spec.arch} at {rep.spec.input_size} px, linear head on the tags; {rep.timing.describe()}", "",
             "| class | images | GT objects | boxes | CorLoc@0.5 | AP50 | AP | MaxBoxAccV2 | box AUROC | top-half precision | precision |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, s in rep.scores.items():
        name = "**all**" if key is None else rep.class_names[key] + ("" if key < len(c.class_names) else " (not tagged)")
        lines.append(f"| {name} | {s.images} | {s.objects} | {s.boxes} | {_f(s.corloc)} | {_f(s.ap50)} | {_f(s.ap)} | "
                     f"{_f(s.mba)} | {_f(s.auroc)} | {_f(s.top_half_precision)} | {_f(s.precision)} |")
    choice = (rep.spec.extra or {}).get(REPORT_KEY)
    if choice:
        probabilities = ", ".join(f"{k} {v:.3f}" for k, v in choice.get("mean_probability", {}).items())
        lines += ["", "box threshold chosen without ground truth: " + rule_text(choice["threshold"])
                  + f" ({choice['reason']}; {choice['pairs']} pairs"
                  + (f"; mean crop probability {probabilities})" if probabilities else ")")]
    told = (rep.spec.extra or {}).get(SEPARABILITY_KEY)
    if told:
        tests = told["classes"].values()
        passed = sum(e["separable"] is True for e in tests)
        testable = sum(bool(e["testable"]) for e in tests)
        verdict = {True: "yes", False: "no: boxed by the objectness alone", None: "not known"}[told["told_apart"]]
        lines += ["", f"tags told apart on held-out images: {verdict} ({passed} of {testable} testable classes "
                      f"pass the permutation test of AP at p < 0.01; {len(told['classes'])} classes)"]
    frac, best = best_centred(rep.centred)
    lines += ["", "centred box CorLoc@0.5: " + ", ".join(f"{int(f * 100)}% {_f(v)}" for f, v in rep.centred.items())
              + f" (best {_f(best)} at {int(frac * 100)}%)"]
    if rep.review:
        d = rep.review
        gains = [x.corloc_after - x.corloc_before for x in d]
        lines.append(f"reviewed {len(d[0].drawn)} images (seeds {d[0].seed}..{d[-1].seed}), scored on the {d[0].scored} others: "
                     f"CorLoc@0.5 {_f(_mean([x.corloc_before for x in d]))} -> {_f(_mean([x.corloc_after for x in d]))} "
                     f"(gain {_mean(gains):+.3f} [{min(gains):+.3f}, {max(gains):+.3f}]), "
                     f"AP50 {_f(_mean([x.ap50_before for x in d]))} -> {_f(_mean([x.ap50_after for x in d]))}, "
                     f"box AUROC {_f(_mean([x.auroc_before for x in d]))} -> {_f(_mean([x.auroc_after for x in d]))}, "
                     f"top-half precision {_f(_mean([x.top_half_before for x in d]))} -> "
                     f"{_f(_mean([x.top_half_after for x in d]))}")
        sides = [x.median_side_cells for x in d if not math.isnan(x.median_side_cells)]
        if sides:
            flagged = sum(v < FINEST_SIDE_CELLS for v in sides)
            lines.append(f"reviewed objects' median side: {min(sides):.2f} to {max(sides):.2f} map cells over the draws "
                         f"(calibrate says to train larger under {FINEST_SIDE_CELLS:.2f}: in {flagged} of {len(sides)} draws)")
    return "\n".join(lines)


def summary_table(reports: Sequence[CollectionReport]) -> str:
    """One Markdown table of all collections side by side."""
    review = any(r.review for r in reports)
    head = ("| collection | images | classes | CorLoc@0.5 | AP50 | AP | MaxBoxAccV2 | box AUROC | top-half precision | "
            "precision | boxes / GT objects | best centred box |")
    if review:
        n = len(reports[0].review[0].drawn) if reports[0].review else 0
        head += f" CorLoc on the other images: before -> after {n} reviewed |"
    lines = [head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |"]
    for r in reports:
        s = r.scores[None]
        frac, best = best_centred(r.centred)
        row = (f"| {r.collection.name} | {s.images} | {len(r.collection.class_names)} | {_f(s.corloc)} | {_f(s.ap50)} | {_f(s.ap)} | "
               f"{_f(s.mba)} | {_f(s.auroc)} | {_f(s.top_half_precision)} | {_f(s.precision)} | {s.boxes} / {s.objects} | "
               f"{_f(best)} ({int(frac * 100)}%) |")
        if review:
            row += (f" {_f(_mean([x.corloc_before for x in r.review]))} -> {_f(_mean([x.corloc_after for x in r.review]))} |"
                    if r.review else " - |")
        lines.append(row)
    return "\n".join(lines)


def quality_line(reports: Sequence[CollectionReport]) -> str:
    """The machine-readable last line: means over the collections."""
    line = ("quality: " + f"corloc={_mean([r.scores[None].corloc for r in reports]):.4f} "
            f"ap50={_mean([r.scores[None].ap50 for r in reports]):.4f} "
            f"auroc={_mean([r.scores[None].auroc for r in reports]):.4f} "
            f"top_half_precision={_mean([r.scores[None].top_half_precision for r in reports]):.4f}")
    if reports and all(r.review for r in reports):
        line += f" corloc_after_review={_mean([_mean([x.corloc_after for x in r.review]) for r in reports]):.4f}"
    return line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--dataset", type=Path, action="append", default=None,
                    help=f"collection folder (repeatable; default: every collection in {DATASETS})")
    ap.add_argument("--reviewed", type=int, default=0, help="simulate N reviewed images in total per collection (seeded draws)")
    ap.add_argument("--seeds", type=int, default=5, help="draws of the reviewed images (seeds --seed .. --seed+S-1)")
    ap.add_argument("--seed", type=int, default=0, help="training seed and first review seed")
    ap.add_argument("--input-size", type=int, default=None, help="network input side in px (default: the train job's)")
    ap.add_argument("--arch", default="efficientnet_lite0")
    ap.add_argument("--box-params", type=json.loads, default=None, help="BoxParams fields as JSON, like the infer job's box_params")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--random-tags", type=int, default=None, metavar="K",
                    help="replace each image's single tag by one of K random tags (seeded by --seed): tags the "
                         "classifier cannot tell apart")
    ap.add_argument("--no-cache", action="store_true", help="recompute the model and results (features cached by train_head stay)")
    args = ap.parse_args(argv)
    if args.reviewed < 0 or args.seeds < 1:
        ap.error(f"--reviewed must be >= 0 and --seeds >= 1, got {args.reviewed} and {args.seeds}")
    try:
        BoxParams.from_dict(args.box_params)
        roots = args.dataset or find_collections(DATASETS)
        collections = [load_collection(r) for r in roots]
        if args.random_tags is not None:
            collections = [with_random_tags(c, args.random_tags, args.seed) for c in collections]
    except (DatasetError, ValueError, TypeError) as exc:
        ap.error(str(exc))
    from camcore.allocator import keep_freed_memory

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as camlabel's worker processes run
    cfg = RunConfig(cache=args.cache, arch=args.arch, input_size=args.input_size, seed=args.seed, device=args.device,
                    box_params=dict(args.box_params or {}), use_cache=not args.no_cache)
    seeds = list(range(args.seed, args.seed + args.seeds))
    reports = []
    t0 = time.perf_counter()
    for c in collections:
        rep = run_collection(c, cfg, reviewed=args.reviewed, seeds=seeds)
        reports.append(rep)
        print(collection_table(rep) + "\n", flush=True)
    print(f"### all collections ({time.perf_counter() - t0:.0f}s)\n\n{summary_table(reports)}\n")
    print(quality_line(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
