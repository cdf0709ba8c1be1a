"""Pseudo-label quality on real photos of the dev collections, through camcore's own path (train
the head and the objectness statistics as the train job does, localise as the infer job does,
learn from reviewed boxes as the calibrate job does). Ground truth is read only to score and to
play the reviewer."""

from __future__ import annotations

import csv
import json
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from camcore.boxes import BoxParams, boxes_from_maps
from camcore.boxes.agreement import EXTRA_KEY as AGREEMENT_KEY
from camcore.calibration import apply, calibrate
from camcore.images import load_image
from camcore.localizer import ImageResult, Localizer
from camcore.metrics import corloc
from camcore.models import ModelSpec
from camcore.objectness import SPEC_KEY, ObjectnessStats, fit_objectness
from camcore.separability import SPEC_KEY as SEPARABILITY_KEY
from camcore.threshold_choice import REPORT_KEY, fit_threshold_choice, model_box_params
from camcore.training import train_head
from tests.prerequisites import dev_dataset

pytestmark = pytest.mark.slow


def _voc_boxes(path: Path) -> torch.Tensor:
    root = ET.parse(path).getroot()
    boxes = [[float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore[union-attr]
             for o in root.findall("object")]
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def _train(paths: list[Path], tags: list[list[int]], class_names: list[str], cache: Path) -> tuple[torch.nn.Module, ModelSpec]:
    """What the train job does: linear head on the tags, objectness statistics, the box threshold
    chosen without ground truth."""
    spec = ModelSpec(arch="efficientnet_lite0", class_names=class_names, input_size=448)
    trained = train_head(spec, [str(p) for p in paths], tags, mode="linear", seed=0, cache_dir=cache)
    stats = fit_objectness(trained.model, trained.spec, paths, tags)
    spec = ModelSpec.from_dict({**trained.spec.to_dict(), "extra": {**trained.spec.extra, SPEC_KEY: stats.to_dict()}})
    choice = fit_threshold_choice(trained.model, spec, paths, tags)
    return trained.model, ModelSpec.from_dict({**spec.to_dict(), "extra": choice.stored_in(spec.extra)})


def _centre(size: tuple[int, int], frac: float = 0.8) -> torch.Tensor:
    w, h = size
    return torch.tensor([[w * (1 - frac) / 2, h * (1 - frac) / 2, w * (1 + frac) / 2, h * (1 + frac) / 2]])


def _corloc_and_best_centred(paths: list[Path], tags: list[list[int]], results: list[ImageResult]) -> tuple[float, float]:
    """CorLoc@0.5 of ``results`` on raccoon/kangaroo photos whose animals carry the image's one
    (random) tag, and that of the best centred box (40, 60 or 80% of each side)."""
    truth = []
    for p, t in zip(paths, tags, strict=True):
        boxes = _voc_boxes(p.parent.parent / "annotations" / f"{p.stem}.xml")
        truth.append((boxes, torch.full((len(boxes),), t[0], dtype=torch.long)))
    sizes = [r.image_size for r in results]
    centred = max(corloc([(_centre(s, f), torch.ones(1), torch.tensor(t)) for s, t in zip(sizes, tags, strict=True)], truth)
                  for f in (0.4, 0.6, 0.8))
    return corloc(results, truth), centred


def _box_auroc(preds: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], truth: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """AUROC of the box scores for "IoU >= 0.5 with an object of the box's class"."""
    right, wrong = [], []
    for (boxes, scores, labels), (gb, gl) in zip(preds, truth, strict=True):
        for b, s, c in zip(boxes, scores, labels, strict=True):
            g = gb[gl == c]
            (right if len(g) and float(box_iou(b[None], g).max()) >= 0.5 else wrong).append(float(s))
    assert right and wrong
    return sum((r > w) + 0.5 * (r == w) for r in right for w in wrong) / (len(right) * len(wrong))


@dataclass
class AfterReview:
    """Means over the draws, on the photos not reviewed."""

    corloc_before: float  # calibrated without the descriptor codes
    corloc_after: float  # with them (the review map, when adopted)
    adopted: int  # draws whose calibration adopted the review map
    auroc_gt_free: float  # box AUROC of the GT-free proposals
    auroc_after: float  # box AUROC after review, as stored (agreement with the GT-free proposals)
    auroc_map_score: float  # the same boxes scored by the refitted map score alone


def _after_review(paths: list[Path], tags: list[list[int]], results: list[ImageResult], base: BoxParams,
                  reviewed_count: int = 20, draws: int = 5) -> AfterReview:
    """CorLoc@0.5 and box AUROC on the other photos over ``draws`` draws of ``reviewed_count``
    reviewed photos (their ground truth plays the reviewer), as the calibrate job learns without
    and with the descriptor codes."""
    truth = []
    for p, t in zip(paths, tags, strict=True):
        boxes = _voc_boxes(p.parent.parent / "annotations" / f"{p.stem}.xml")
        truth.append((boxes, torch.full((len(boxes),), t[0], dtype=torch.long)))
    maps = {i: r.maps for i, r in enumerate(results)}
    sizes = {i: r.image_size for i, r in enumerate(results)}
    codes = {i: r.codes for i, r in enumerate(results) if r.codes is not None}
    assert len(codes) == len(results)
    rows = []
    for seed in range(draws):
        reviewed_ids = random.Random(seed).sample(sorted(maps), reviewed_count)
        reviewed = {i: [(int(c), b.tolist()) for b, c in zip(*truth[i], strict=True)] for i in reviewed_ids}
        rest = [i for i in sorted(maps) if i not in set(reviewed_ids)]
        plain = calibrate({i: maps[i] for i in reviewed_ids}, sizes, reviewed, base)
        learned = calibrate({i: maps[i] for i in reviewed_ids}, sizes, reviewed, base, codes_by_image=codes)
        map_score = {**learned, "extra": {k: v for k, v in learned["extra"].items() if k != AGREEMENT_KEY}}
        rest_truth = [truth[i] for i in rest]
        after = [apply({i: maps[i]}, sizes, learned, codes_by_image=codes)[i] for i in rest]
        rows.append((corloc([apply({i: maps[i]}, sizes, plain)[i] for i in rest], rest_truth), corloc(after, rest_truth),
                     bool(learned["extra"]["calibration"]["review_map"]["adopted"]),
                     _box_auroc([(r.boxes, r.scores, r.labels) for r in (results[i] for i in rest)], rest_truth),
                     _box_auroc(after, rest_truth),
                     _box_auroc([apply({i: maps[i]}, sizes, map_score, codes_by_image=codes)[i] for i in rest], rest_truth)))
    means = [sum(float(r[k]) for r in rows) / draws for k in range(6)]
    return AfterReview(means[0], means[1], sum(r[2] for r in rows), means[3], means[4], means[5])


def test_tags_the_classifier_cannot_tell_apart_still_give_boxes_better_than_a_centred_box(tmp_path: Path) -> None:
    """Tags drawn at random carry no location signal in the class maps; the collection's
    objectness must still find the animal, beating the best centred box on the same images."""
    root = dev_dataset("raccoon-kangaroo")
    paths = [p for c in ("kangaroo", "raccoon") for p in sorted((root / c / "images").glob("*.jpg"))[:40]]
    paths = [p for p in paths if p.name != "00090.jpg"]  # the truncated file
    rng = random.Random(0)
    tags = [[rng.randrange(2)] for _ in paths]  # "a" / "b", independent of what is in the photo
    model, spec = _train(paths, tags, ["a", "b"], tmp_path / "features")
    # the held-out test sees it: neither tag is told apart, so both are boxed by the objectness
    # alone, from each map's mean (the classifier's view of the crops says nothing here)
    told = spec.extra[SEPARABILITY_KEY]
    assert told["told_apart"] is False, told
    stats = ObjectnessStats.from_dict(spec.extra[SPEC_KEY])
    assert stats.uses_cam is not None and not bool(stats.uses_cam.any())
    assert spec.extra[REPORT_KEY]["threshold"] is None and model_box_params(spec).threshold is None
    localizer = Localizer(model, spec, params=model_box_params(spec))
    try:
        results = localizer.localize([load_image(p, min_size=spec.input_size) for p in paths], tags)
    finally:
        localizer.close()
    ours, centred = _corloc_and_best_centred(paths, tags, results)
    assert ours >= centred + 0.1, (ours, centred)



def test_many_tags_the_classifier_cannot_tell_apart_use_the_objectness_alone_and_beat_a_centred_box(tmp_path: Path) -> None:
    """Many rare tags drawn at random (as fine-grained tags the features cannot separate): the
    head learns each tag *against* the common object, so every class map points at the
    background: fused with the objectness as for tags it can tell apart, the maps localise 0.34
    of these 120 photos, below the best centred box (0.49). The objectness statistics see that the
    class maps disagree with them and box with the objectness alone (0.68). Twenty reviewed
    photos in total (under two per tag) then teach a location map on the images' descriptor
    codes, which no per-tag correction could learn from so few, and the box score keeps ranking
    the boxes it proposes."""
    root = dev_dataset("raccoon-kangaroo")
    paths = [p for c in ("kangaroo", "raccoon") for p in sorted((root / c / "images").glob("*.jpg"))[:60]]
    paths = [p for p in paths if p.name != "00090.jpg"]  # the truncated file
    rng = random.Random(0)
    names = [f"tag{k}" for k in range(12)]
    tags = [[rng.randrange(len(names))] for _ in paths]
    model, spec = _train(paths, tags, names, tmp_path / "features")
    stats = ObjectnessStats.from_dict(spec.extra[SPEC_KEY])
    seen = sorted({t[0] for t in tags})
    assert spec.extra[SEPARABILITY_KEY]["told_apart"] is False, spec.extra[SEPARABILITY_KEY]
    assert stats.uses_cam is not None and stats.cam_agreement is not None
    disagree = int((~stats.uses_cam[seen]).sum())
    assert disagree >= 0.75 * len(seen), stats.cam_agreement[seen]  # (nearly) every class map points away
    localizer = Localizer(model, spec, params=model_box_params(spec))
    try:
        results = localizer.localize([load_image(p, min_size=spec.input_size) for p in paths], tags)
    finally:
        localizer.close()
    ours, centred = _corloc_and_best_centred(paths, tags, results)
    assert ours >= centred + 0.1, (ours, centred)

    # 20 reviewed images in total (under two per tag) teach a location map on the descriptor codes
    # (measured: 0.694 -> 0.766 on the other photos, mean of 5 draws, adopted in 4)
    review = _after_review(paths, tags, results, model_box_params(spec))
    assert review.adopted >= 1 and review.corloc_after >= review.corloc_before + 0.04, review
    # the stored score after review ranks the other photos' boxes as well as before review, where
    # the refitted map score alone ranks them no better than chance (measured: AUROC 0.680 before,
    # 0.700 after, 0.500 by the map score alone)
    assert review.auroc_after >= review.auroc_map_score + 0.08 and review.auroc_after >= review.auroc_gt_free - 0.02, review


@pytest.mark.timeout(1800)  # trains on all 363 photos (decoding phone photos dominates)
def test_playing_cards_get_card_sized_boxes_without_review_and_twenty_reviewed_images_hold_them(tmp_path: Path) -> None:
    """Cards are small on their tables: the mean rule boxes them with their halo. The crops the
    classifier recognises best choose a tighter threshold without any review; twenty reviewed
    images in total (not per class) teach the box size even from the mean rule, keep the chosen
    rule's quality, and the refitted box score ranks right boxes above wrong ones."""
    root = dev_dataset("playing_cards")
    gt = json.loads((root / "gt.json").read_text())
    with (root / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))  # the whole collection: on 140 of its photos the choice is not significant
    class_names = sorted({t for r in rows for t in r["tags"].split(";") if t})
    by_file = {im["file_name"]: im for im in gt["images"]}
    cat_name = {c["id"]: c["name"] for c in gt["categories"]}
    paths = [root / "images" / r["file_name"] for r in rows]
    tags = [sorted({class_names.index(t) for t in r["tags"].split(";") if t}) for r in rows]
    model, spec = _train(paths, tags, class_names, tmp_path / "features")
    assert spec.extra[SEPARABILITY_KEY]["told_apart"] is True, spec.extra[SEPARABILITY_KEY]  # look-alike, yet told apart
    chosen = model_box_params(spec)
    assert chosen.threshold is not None, spec.extra[REPORT_KEY]
    localizer = Localizer(model, spec, params=chosen)
    try:
        results = localizer.localize([load_image(p, min_size=spec.input_size) for p in paths], tags)
    finally:
        localizer.close()
    truth = []
    for r, res in zip(rows, results, strict=True):
        im = by_file[r["file_name"]]
        anns = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
        sx, sy = res.image_size[0] / im["width"], res.image_size[1] / im["height"]
        boxes = torch.tensor([[a["bbox"][0] * sx, a["bbox"][1] * sy, (a["bbox"][0] + a["bbox"][2]) * sx,
                               (a["bbox"][1] + a["bbox"][3]) * sy] for a in anns]).reshape(-1, 4)
        truth.append((boxes, torch.tensor([class_names.index(cat_name[a["category_id"]]) for a in anns], dtype=torch.long)))
    maps = {i: r.maps for i, r in enumerate(results)}
    sizes = {i: r.image_size for i, r in enumerate(results)}
    mean_rule = [boxes_from_maps(maps[i], sizes[i], BoxParams()) for i in sorted(maps)]
    gt_free, mean_rule_corloc = corloc(results, truth), corloc(mean_rule, truth)
    assert gt_free >= 0.45 and gt_free >= mean_rule_corloc + 0.2, (gt_free, mean_rule_corloc, spec.extra[REPORT_KEY])

    reviewed_ids = random.Random(1).sample(sorted(maps), 20)
    reviewed = {i: [(int(c), b.tolist()) for b, c in zip(*truth[i], strict=True)] for i in reviewed_ids}
    rest = [i for i in sorted(maps) if i not in set(reviewed_ids)]
    from_mean_rule = calibrate({i: maps[i] for i in reviewed_ids}, sizes, reviewed, BoxParams())
    taught = apply({i: maps[i] for i in rest}, sizes, from_mean_rule)
    before = corloc([mean_rule[i] for i in rest], [truth[i] for i in rest])
    learned = corloc([taught[i] for i in rest], [truth[i] for i in rest])
    assert learned >= 0.5 and learned >= before + 0.25, (before, learned, from_mean_rule["extra"]["calibration"]["collection"])
    params = calibrate({i: maps[i] for i in reviewed_ids}, sizes, reviewed, chosen)
    after = apply({i: maps[i] for i in rest}, sizes, params)
    held = corloc([after[i] for i in rest], [truth[i] for i in rest])
    assert held >= 0.5 and held >= corloc([results[i] for i in rest], [truth[i] for i in rest]) - 0.05, held
    # the refitted score: right boxes (IoU >= 0.5 with a card of their class) score higher
    right, wrong = [], []
    for i in rest:
        boxes, scores, labels = after[i]
        for b, s, c in zip(boxes, scores, labels, strict=True):
            g = truth[i][0][truth[i][1] == c]
            (right if len(g) and float(box_iou(b[None], g).max()) >= 0.5 else wrong).append(float(s))
    assert right and wrong
    auroc = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong) / (len(right) * len(wrong))
    assert auroc >= 0.65, auroc
