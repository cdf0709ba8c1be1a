"""Pseudo-label quality on a VOC-annotated folder collection (default: the shared raccoon-kangaroo set).

Transductive, as a camlabel user runs it: the head is trained on the folder tags of the whole
collection; ground truth (``*/annotations/*.xml``) is used only to score. Prints a Markdown table
method x CorLoc@0.5 / MaxBoxAccV2 / AP50 / images/s.

    .venv/bin/python bench/quality.py [--root DIR] [--input-size 448] [--calib-per-class 5] [--calib-draws 10]

Methods: centre box (80% of each side); vanilla CAM (20% of max, largest component); DDT
(class-agnostic first principal component of the descriptors, >0, largest component); camlabel's
default (``BoxParams()``: CAM fused with per-class DDT, adaptive mean threshold, components by
mass); the default (and vanilla CAM) calibrated with ``--calib-per-class`` reviewed images per
class (:mod:`camcore.calibration`: per-class threshold rule and box correction), scored on the
*other* images next to the uncalibrated method on the same images: mean over ``--calib-draws``
seeded draws of the reviewed images, with the mean [min, max] of the CorLoc and AP50 gains.

One model pass over the collection gives CAMs and descriptors for every method (features are cached
under ``--cache``); images/s is measured separately with :class:`camcore.pipeline.Localizer`
end to end (preprocess, forward, maps, boxes) on ``--speed-images`` images.
"""

from __future__ import annotations

import argparse
import inspect
import random
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from camcore.allocator import keep_freed_memory
from camcore import objectness as obj
from camcore.calibration import apply, calibrate
from camcore.cam import align_maps, class_activation_maps
from camcore.images import ImageLoadError, load_image
from camcore.metrics import coco_ap, corloc, max_box_acc_v2
from camcore.models import ModelSpec
from camcore.pipeline import BoxParams, Localizer, boxes_from_maps, preprocess
from camcore.training import train_head

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "raccoon-kangaroo"


def parse_voc(path: Path, class_names: list[str]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """``(boxes[M, 4] xyxy pixels, labels[M], (width, height) as written)`` of one VOC file.

    ``<path>``/``<filename>`` are ignored (they name other machines); objects of unknown classes
    are skipped."""
    root = ET.parse(path).getroot()
    size = root.find("size")
    wh = (int(size.findtext("width", "0")), int(size.findtext("height", "0"))) if size is not None else (0, 0)
    boxes, labels = [], []
    for o in root.findall("object"):
        name = (o.findtext("name") or "").strip()
        bb = o.find("bndbox")
        if name not in class_names or bb is None:
            continue
        boxes.append([float(bb.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(class_names.index(name))
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.long), wh


def load_collection(root: Path) -> tuple[list[str], list[dict]]:
    """Folders ``root/<class>/images/*.jpg`` with ``root/<class>/annotations/<stem>.xml``."""
    class_names = sorted(p.name for p in root.iterdir() if (p / "images").is_dir())
    items = []
    for c, name in enumerate(class_names):
        for img_path in sorted((root / name / "images").iterdir()):
            if img_path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            ann = root / name / "annotations" / (img_path.stem + ".xml")
            gt_boxes, gt_labels, voc_wh = parse_voc(ann, class_names) if ann.is_file() else (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), (0, 0))
            try:
                img = load_image(img_path)  # a truncated JPEG is kept, partly decoded
            except ImageLoadError as exc:
                print(f"skipped {img_path.relative_to(root)}: {exc} (counted as a miss)", file=sys.stderr)
                img = None
            if img is not None and voc_wh[0] > 0 and voc_wh != img.size:  # boxes drawn on another orientation/scale
                sx, sy = img.size[0] / voc_wh[0], img.size[1] / voc_wh[1]
                gt_boxes = gt_boxes * torch.tensor([sx, sy, sx, sy])
            items.append({"name": f"{name}/{img_path.name}", "path": img_path, "image": img, "tags": [c], "gt": (gt_boxes, gt_labels)})
    return class_names, items


@torch.no_grad()
def extract(model, spec: ModelSpec, images: list, batch_size: int = 16) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image: final features ``Tensor[C, h, w]`` and descriptors ``Tensor[C', h, w]`` (float16)."""
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    feats, descs = [], []
    for s in range(0, len(images), batch_size):
        x = (preprocess(images[s : s + batch_size], spec.input_size).float() / 255.0 - mean) / std
        with obj.capture_descriptors(model) as cap:
            f = model.features(x)
        d = cap.get("features", f)
        feats.extend(f.half())
        descs.extend(d.half())
    return feats, descs


def centre_box(size: tuple[int, int], frac: float = 0.8) -> torch.Tensor:
    w, h = size
    return torch.tensor([[w * (1 - frac) / 2, h * (1 - frac) / 2, w * (1 + frac) / 2, h * (1 + frac) / 2]])


def evaluate(preds: list, gts: list, maps: list | None, sizes: list) -> dict[str, float]:
    """CorLoc@0.5, AP50 and (with maps) MaxBoxAccV2 over the given images."""
    out = {"corloc": corloc(preds, gts), "ap50": coco_ap(preds, gts)["AP50"] or 0.0, "mba": float("nan")}
    if maps is not None:
        pair_maps, pair_gt, pair_sizes = [], [], []
        for m, (gb, gl), size in zip(maps, gts, sizes):
            for c in sorted(set(gl.tolist())):
                if m is None or c not in m:  # unloadable image: an empty map scores as a miss
                    pair_maps.append(torch.zeros(2, 2))
                    pair_sizes.append(size or (2, 2))
                else:
                    pair_maps.append(m[c])
                    pair_sizes.append(size)
                pair_gt.append(gb[gl == c])
        out["mba"] = max_box_acc_v2(pair_maps, pair_gt, pair_sizes, thresholds=[i / 50 for i in range(50)])["max_box_acc_v2"]
    return out


def speed(model, spec: ModelSpec, params: BoxParams, images: list, tags: list, align: bool) -> float:
    loc = Localizer(model, spec, params=params, batch_size=16, align=align)
    loc.localize(images[:4], tags[:4])  # warm-up
    t = time.perf_counter()
    loc.localize(images, tags)
    return len(images) / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--input-size", type=int, default=448)
    ap.add_argument("--calib-per-class", type=int, default=5)
    ap.add_argument("--calib-draws", type=int, default=10, help="random draws of the reviewed images (seeds seed..seed+N-1)")
    ap.add_argument("--speed-images", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "camlabel-quality-cache")
    align_default = inspect.signature(Localizer).parameters["align"].default
    ap.add_argument("--align", action=argparse.BooleanOptionalAction, default=align_default,
                    help=f"shift maps by spec.map_shift like Localizer(align=True) (default: Localizer's, {align_default})")
    ap.add_argument("--dump", type=Path, default=None, help="save the stored maps and ground truth here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as camlabel's worker processes run
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    class_names, items = load_collection(args.root)
    ok = [it for it in items if it["image"] is not None]
    spec = ModelSpec(arch="efficientnet_lite0", class_names=class_names, input_size=args.input_size)
    # file paths, so that train_head caches the pooled features between runs
    trained = train_head(spec, [str(it["path"]) for it in ok], [it["tags"] for it in ok], mode="linear", seed=args.seed, cache_dir=args.cache)
    model, spec = trained.model.eval(), trained.spec
    t_train = time.perf_counter() - t0
    cache_file = args.cache / f"maps-{args.root.name}-{args.input_size}-{len(ok)}-{args.seed}.pt"
    if cache_file.is_file():
        feats, descs = torch.load(cache_file, weights_only=True)
    else:
        feats, descs = extract(model, spec, [it["image"] for it in ok])
        args.cache.mkdir(parents=True, exist_ok=True)
        torch.save((feats, descs), cache_file)
    shift = -spec.map_shift / spec.feature_stride if args.align else 0.0  # as Localizer(align=...)
    weight = model.classifier.weight.detach()

    # per image: raw CAM per tag, and the fused default map (fitted per-class DDT statistics)
    acc = obj.DdtAccumulator(spec.num_classes, descs[0].shape[0])
    agn = obj.DdtAccumulator(1, descs[0].shape[0])
    cams_raw = []
    for it, f, d in zip(ok, feats, descs):
        idx = torch.tensor(it["tags"])
        cam = class_activation_maps(f[None].float(), weight, torch.zeros_like(idx), idx)
        cams_raw.append({c: cam[j] for j, c in enumerate(it["tags"])})
        acc.update(d[None].float(), [it["tags"]], [cams_raw[-1]])
        agn.update(d[None].float(), [[0]], [{0: cam[0]}])
    stats, agn_stats = acc.finalize(), agn.finalize()
    spec.extra = {**spec.extra, obj.SPEC_KEY: stats.to_dict()}
    for it, f, d, cr in zip(ok, feats, descs, cams_raw):
        tags = torch.tensor(it["tags"])
        img_idx = torch.zeros_like(tags)
        cam = torch.stack([cr[c] for c in it["tags"]])
        fused = obj.fuse_maps(cam, obj.objectness_maps(d[None].float(), stats, img_idx, tags))
        ddt = obj.objectness_maps(d[None].float(), agn_stats, img_idx, torch.zeros_like(tags))
        own = obj.fuse_maps(cam, obj.per_image_objectness(d[None].float(), cam, img_idx))
        it["maps"] = {
            "own": dict(zip(it["tags"], align_maps(own, shift))),
            "cam": dict(zip(it["tags"], align_maps(cam, shift))),
            "default": dict(zip(it["tags"], align_maps(fused, shift))),
            "ddt": dict(zip(it["tags"], align_maps(ddt, shift))),
        }
    t_maps = time.perf_counter() - t0

    if args.dump is not None:  # stored maps for offline studies (calibration, box rules)
        torch.save([{k: it.get(k) for k in ("name", "tags", "gt", "maps")} | {"size": it["image"].size if it["image"] else None}
                    for it in items], args.dump)
    gts = [it["gt"] for it in items]
    sizes = [it["image"].size if it["image"] is not None else None for it in items]
    empty = (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))

    def run(key: str | None, params: BoxParams | None, subset: list[int]) -> dict[str, float]:
        preds, maps = [], []
        for i in subset:
            it = items[i]
            if it["image"] is None:
                preds.append(empty)
                maps.append(None)
            elif key is None:
                preds.append((centre_box(it["image"].size), torch.ones(1), torch.tensor(it["tags"][:1])))
                maps.append(None)
            else:
                preds.append(boxes_from_maps(it["maps"][key], it["image"].size, params))  # type: ignore[arg-type]
                maps.append(it["maps"][key])
        return evaluate(preds, [gts[i] for i in subset], None if key is None else maps, [sizes[i] for i in subset])

    all_idx = list(range(len(items)))
    vanilla = BoxParams(method="cam", mode="largest", threshold=0.2, normalize="max")
    ddt_params = BoxParams(method="cam", mode="largest", threshold=0.0, normalize="max")
    default = BoxParams()

    # calibration: N reviewed images per class (seeded draws), scored on the *other* images
    def calib_draw(draw: int, key: str, base: BoxParams) -> tuple[dict, dict, dict, float]:
        rng = random.Random(args.seed + draw)
        calib_idx: list[int] = []
        for c in range(len(class_names)):
            pool = [i for i, it in enumerate(items) if it["image"] is not None and c in it["tags"]]
            calib_idx += rng.sample(pool, min(args.calib_per_class, len(pool)))
        rest = [i for i in all_idx if i not in set(calib_idx)]
        reviewed = {i: [(int(lab), box.tolist()) for box, lab in zip(*items[i]["gt"])] for i in calib_idx}
        t = time.perf_counter()
        params = calibrate({i: items[i]["maps"][key] for i in calib_idx}, {i: items[i]["image"].size for i in calib_idx}, reviewed, base)
        ok_rest = [i for i in rest if items[i]["image"] is not None]
        applied = apply({i: items[i]["maps"][key] for i in ok_rest}, {i: items[i]["image"].size for i in ok_rest}, params)
        elapsed = time.perf_counter() - t
        cal = evaluate([applied.get(i, empty) for i in rest], [gts[i] for i in rest], None, [sizes[i] for i in rest])
        before = evaluate([boxes_from_maps(items[i]["maps"][key], items[i]["image"].size, base) if items[i]["image"] is not None else empty
                           for i in rest], [gts[i] for i in rest], None, [sizes[i] for i in rest])
        return before, cal, params, elapsed

    def mean_of(rs: list[dict]) -> dict[str, float]:
        return {k: sum(r[k] for r in rs) / len(rs) for k in rs[0]}

    def gain_note(draws: list) -> str:
        """mean [min, max] of the CorLoc and AP50 gains over draws, and wins/losses in CorLoc."""
        parts = []
        for metric, label in (("corloc", "CorLoc"), ("ap50", "AP50")):
            g = [d[1][metric] - d[0][metric] for d in draws]
            parts.append(f"{label} gain {sum(g) / len(g):+.3f} [{min(g):+.3f}, {max(g):+.3f}]")
        wins = sum(d[1]["corloc"] > d[0]["corloc"] for d in draws)
        losses = sum(d[1]["corloc"] < d[0]["corloc"] for d in draws)
        return f"{'; '.join(parts)}; wins/losses {wins}/{losses}"

    cal_rows = {}
    t_cal = 0.0
    for key, base in (("default", default), ("cam", vanilla)):
        draws = [calib_draw(d, key, base) for d in range(args.calib_draws)]
        t_cal += sum(d[3] for d in draws)
        first = draws[0][2]
        cal_rows[key] = (mean_of([d[0] for d in draws]), mean_of([d[1] for d in draws]), gain_note(draws),
                         first["per_class"], first["extra"].get("box_correction", {}))
    n_rest = len(items) - args.calib_per_class * len(class_names)

    speed_imgs = [it["image"] for it in ok[: args.speed_images]]
    speed_tags = [it["tags"] for it in ok[: args.speed_images]]
    ips_cam = speed(model, spec, vanilla, speed_imgs, speed_tags, args.align)
    ips_default = speed(model, spec, default, speed_imgs, speed_tags, args.align)

    rows = [
        ("centre box (80% of each side)", run(None, None, all_idx), "-"),
        ("vanilla CAM, 20% of max, largest component", run("cam", vanilla, all_idx), f"{ips_cam:.1f}"),
        ("DDT class-agnostic PCA, > 0, largest component", run("ddt", ddt_params, all_idx), f"{ips_cam:.1f}"),
        ("**default**: CAM + per-class DDT, mean threshold, components by mass", run("default", default, all_idx), f"{ips_default:.1f}"),
        ("default without fitted statistics (each image's own DDT)", run("own", default, all_idx), f"{ips_default:.1f}"),
        (f"default, on the {n_rest} images not used for calibration (mean of {args.calib_draws} draws)", cal_rows["default"][0], f"{ips_default:.1f}"),
        ((f"default + calibration ({args.calib_per_class} reviewed images/class), same images "
          f"({cal_rows['default'][2]})"), cal_rows["default"][1], "recompute only"),
        (f"vanilla CAM, on the same {n_rest} images", cal_rows["cam"][0], f"{ips_cam:.1f}"),
        ((f"vanilla CAM + calibration ({args.calib_per_class} reviewed images/class), same images "
          f"({cal_rows['cam'][2]})"), cal_rows["cam"][1], "recompute only"),
    ]
    print(f"\ncollection {args.root.name}: {len(items)} images ({len(items) - len(ok)} unreadable, scored as misses), "
          f"classes {class_names}, input {args.input_size}px, align={args.align}, head: camcore.training.train_head "
          f"(linear, {trained.metrics['epochs']} steps), {args.threads} threads; "
          f"train {t_train:.0f}s, maps {t_maps - t_train:.0f}s, calibration+recompute {t_cal:.1f}s\n")
    print("| method | CorLoc@0.5 | MaxBoxAccV2 | AP50 | images/s |")
    print("| --- | --- | --- | --- | --- |")
    for name, r, ips in rows:
        mba = "-" if r["mba"] != r["mba"] else f"{r['mba']:.3f}"
        print(f"| {name} | {r['corloc']:.3f} | {mba} | {r['ap50']:.3f} | {ips} |")
    print("\nchosen in the first draw (per-class rules; box corrections): default", cal_rows["default"][3], cal_rows["default"][4],
          "| vanilla CAM", cal_rows["cam"][3], cal_rows["cam"][4])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
