"""The quality harness (bench/quality.py): loaders, ground truth kept out of the product path,
the review simulation, caching and the report, on tiny generated COCO and VOC folders."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw

from tests.bench.bench_modules import bench_module

q = bench_module("quality.py")


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """Tiny tensors: one intra-op thread (2-thread OpenMP spinning on a shared host costs ~8x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

COLOURS = {"blue": (30, 60, 220), "red": (220, 40, 30)}


def _photo(path: Path, size: tuple[int, int], boxes: list[tuple[str, list[int]]]) -> None:
    img = Image.new("RGB", size, (128, 128, 120))
    draw = ImageDraw.Draw(img)
    for name, (x1, y1, x2, y2) in boxes:
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=COLOURS[name])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=90)


# (file, written size in gt.json, boxes in the written pixels, manifest tags); the files are 80 x 64
COCO_IMAGES = [
    ("a.jpg", (80, 64), [("red", [10, 10, 40, 40])], "red"),
    ("b.jpg", (80, 64), [("blue", [30, 20, 70, 60])], "blue"),
    ("c.jpg", (160, 128), [("red", [20, 20, 80, 80]), ("blue", [100, 40, 150, 120])], "red;blue"),  # drawn at 2x
    ("d.jpg", (80, 64), [("red", [40, 8, 76, 40])], "red"),
    ("e.jpg", (80, 64), [("blue", [4, 4, 36, 36])], "blue"),
    ("f.jpg", (80, 64), [], ""),  # no tags, no objects
]


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    root = tmp_path / "tinycoco"
    images, annotations = [], []
    cats = {"red": 1, "blue": 2, "green": 3}
    for n, (name, written, boxes, _tags) in enumerate(COCO_IMAGES, start=1):
        sx, sy = 80 / written[0], 64 / written[1]
        _photo(root / "images" / name, (80, 64), [(c, [int(b[0] * sx), int(b[1] * sy), int(b[2] * sx), int(b[3] * sy)]) for c, b in boxes])
        images.append({"id": n, "file_name": name, "width": written[0], "height": written[1]})
        for c, b in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": cats[c],
                                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": 1.0, "iscrowd": 0})
    annotations.append({"id": len(annotations) + 1, "image_id": 4, "category_id": 3, "bbox": [0, 0, 8, 8], "area": 64, "iscrowd": 0})
    gt = {"images": images, "annotations": annotations, "categories": [{"id": i, "name": c} for c, i in cats.items()]}
    (root / "gt.json").write_text(json.dumps(gt))
    rows = ["file_name,tags"] + [f"{name},{tags}" for name, _w, _b, tags in COCO_IMAGES] + ["gone.jpg,red"]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def _voc_xml(path: Path, size: tuple[int, int], objects: list[tuple[str, list[int]]]) -> None:
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>x.jpg</filename><path>C:\\Users\\someone\\x.jpg</path><size><width>{size[0]}</width>"
                    f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>")


@pytest.fixture
def voc_dir(tmp_path: Path) -> Path:
    root = tmp_path / "tinyvoc"
    for cls, files in {"red": ["r1", "r2", "r3"], "blue": ["b1", "b2", "b3"]}.items():
        for i, stem in enumerate(files):
            box = [8 + 8 * i, 8, 48 + 8 * i, 48]
            _photo(root / cls / "images" / f"{stem}.jpg", (80, 64), [(cls, box)])
            if stem == "r3":
                continue  # an image without an annotation file
            written = (160, 128) if stem == "b2" else (80, 64)
            scale = written[0] // 80
            _voc_xml(root / cls / "annotations" / f"{stem}.xml", written, [(cls, [v * scale for v in box])])
    return root


def _cfg(tmp_path: Path, **kw: Any) -> Any:
    return q.RunConfig(cache=tmp_path / "cache", arch="tiny_cnn", input_size=32, **kw)


def test_manifest_loader_gives_files_and_tags_only(coco_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = q.load_collection(coco_dir)
    assert (c.layout, c.name, c.class_names) == ("coco", "tinycoco", ("blue", "red"))
    assert [s.path.name for s in c.samples] == [name for name, *_ in COCO_IMAGES]  # gone.jpg has no file
    assert "gone.jpg" in capsys.readouterr().err
    assert [s.tags for s in c.samples] == [(1,), (0,), (0, 1), (1,), (0,), ()]
    assert {f for f in q.Sample.__dataclass_fields__} == {"path", "tags"}
    assert not any(hasattr(s, "gt") or hasattr(s, "boxes") for s in c.samples)


def test_voc_loader_tags_by_folder(voc_dir: Path) -> None:
    c = q.load_collection(voc_dir)
    assert (c.layout, c.class_names) == ("voc", ("blue", "red"))
    assert [(s.path.name, s.tags) for s in c.samples] == [("b1.jpg", (0,)), ("b2.jpg", (0,)), ("b3.jpg", (0,)),
                                                           ("r1.jpg", (1,)), ("r2.jpg", (1,)), ("r3.jpg", (1,))]


def test_loader_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.csv").write_text("file_name,tags\n")
    with pytest.raises(q.DatasetError, match="missing"):
        q.load_collection(tmp_path / "half")
    (tmp_path / "empty").mkdir()
    with pytest.raises(q.DatasetError, match="neither"):
        q.load_collection(tmp_path / "empty")
    for argv, says in ((["--dataset", str(tmp_path / "nothing-here")], "not a folder"),
                       (["--dataset", str(tmp_path / "empty"), "--box-params", '{"nope": 1}'], "nope"),
                       (["--reviewed", "-1"], "--reviewed"), (["--seeds", "0"], "--seeds")):
        with pytest.raises(SystemExit) as exc:
            q.main(argv)
        assert exc.value.code == 2 and says in capsys.readouterr().err, argv


def test_coco_ground_truth_converted_and_scaled_to_the_decoded_image(coco_dir: Path) -> None:
    c = q.load_collection(coco_dir)
    gt = q.load_ground_truth(c, [(80, 64)] * len(c.samples))
    assert gt.class_names == ("blue", "red", "green")  # a class only the ground truth names comes last
    assert gt.boxes[0].tolist() == [[10, 10, 40, 40]] and gt.labels[0].tolist() == [1]  # xywh -> xyxy
    assert gt.boxes[2].tolist() == [[10, 10, 40, 40], [50, 20, 75, 60]]  # written at 160 x 128: halved
    assert gt.labels[2].tolist() == [1, 0]
    assert gt.labels[3].tolist() == [1, 2]
    assert gt.boxes[5].shape == (0, 4)
    unscaled = q.load_ground_truth(c, [None] * len(c.samples))  # unreadable image: boxes as written
    assert unscaled.boxes[2][0].tolist() == [20, 20, 80, 80]


def test_voc_ground_truth_scaled_and_missing_annotations_empty(voc_dir: Path) -> None:
    c = q.load_collection(voc_dir)
    gt = q.load_ground_truth(c, [(80, 64)] * len(c.samples))
    assert gt.boxes[1].tolist() == [[16, 8, 56, 48]]  # b2 was written at 160 x 128
    assert gt.boxes[5].shape == (0, 4)  # r3 has no annotation file
    assert gt.labels[3].tolist() == [1]


def test_random_tags_replace_each_images_tag_and_its_objects_follow(voc_dir: Path, coco_dir: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    c = q.with_random_tags(q.load_collection(voc_dir), 3, seed=0)
    assert c.name == "tinyvoc-random3" and c.class_names == ("random00", "random01", "random02")
    assert all(len(s.tags) == 1 and 0 <= s.tags[0] < 3 for s in c.samples)
    assert len({s.tags[0] for s in c.samples}) > 1  # drawn, not one tag for all
    assert c.replaced == ("blue",) * 3 + ("red",) * 3
    assert q.with_random_tags(q.load_collection(voc_dir), 3, seed=0) == c  # seeded
    gt = q.load_ground_truth(c, [(80, 64)] * len(c.samples))
    for s, labels in zip(c.samples, gt.labels, strict=True):
        assert labels.tolist() in ([], [s.tags[0]])  # r3 has no annotation file
    assert gt.class_names == c.class_names
    for bad, says in ((lambda: q.with_random_tags(q.load_collection(coco_dir), 3), "one tag per image"),
                      (lambda: q.with_random_tags(q.load_collection(voc_dir), 1), "at least 2")):
        with pytest.raises(q.DatasetError, match=says):
            bad()
    with pytest.raises(SystemExit) as exc:
        q.main(["--dataset", str(coco_dir), "--random-tags", "4"])
    assert exc.value.code == 2 and "one tag per image" in capsys.readouterr().err


def test_product_path_never_receives_ground_truth(coco_dir: Path, voc_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_train, real_infer, real_gt = q.train, q.infer, q.load_ground_truth

    def plain(value: Any) -> bool:  # file paths, tag lists, class names, box params: nothing else
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return isinstance(value, (Path, str, int, q.BoxParams)) or value is None

    def train(paths: Any, tags: Any, class_names: Any, **kw: Any) -> Any:
        assert plain(paths) and plain(tags) and plain(class_names) and all(plain(v) for v in kw.values())
        events.append("train")
        return real_train(paths, tags, class_names, **kw)

    def infer(model: Any, spec: Any, paths: Any, tags: Any, params: Any, **kw: Any) -> Any:
        assert plain(paths) and plain(tags) and plain(params)
        assert not any(hasattr(spec, a) for a in ("gt", "boxes", "annotations"))
        events.append("infer")
        return real_infer(model, spec, paths, tags, params, **kw)

    def load_ground_truth(*a: Any, **kw: Any) -> Any:
        events.append("gt")
        return real_gt(*a, **kw)

    monkeypatch.setattr(q, "train", train)
    monkeypatch.setattr(q, "infer", infer)
    monkeypatch.setattr(q, "load_ground_truth", load_ground_truth)
    for root, truth in ((coco_dir, ["gt.json"]), (voc_dir, ["red/annotations", "blue/annotations"])):
        events.clear()
        c = q.load_collection(root)
        # the product path runs with the ground truth moved out of the collection folder
        hidden = tmp_path / f"hidden-{root.name}"
        for rel in truth:
            (hidden / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(root / rel), str(hidden / rel))
        results = q.product_results(c, _cfg(tmp_path), q.Timing()).results
        assert events == ["train", "infer"] and len(results) == len(c.samples)
        assert all(isinstance(r, q.ImageResult) for r in results)
        for rel in truth:
            shutil.move(str(hidden / rel), str(root / rel))
        rep = q.run_collection(c, _cfg(tmp_path))  # cached product path, then the ground truth
        assert events == ["train", "infer", "gt"]
        assert rep.scores[None].objects == (7 if root == coco_dir else 5)


def _result(size: tuple[int, int], maps: dict[int, torch.Tensor], boxes: list[list[float]], labels: list[int],
            scores: list[float]) -> Any:
    return q.ImageResult(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores), torch.tensor(labels),
                         maps, torch.ones(2), size)


def _blob(cx: int, cy: int) -> torch.Tensor:
    m = torch.zeros(8, 8)
    m[cy - 1: cy + 2, cx - 1: cx + 2] = 1.0
    return m


def _synthetic(n: int) -> tuple[list[Any], Any]:
    """``n`` 80 x 80 images: one object of class ``i % 2``; the map's blob and box sit on it."""
    results, boxes, labels = [], [], []
    for i in range(n):
        cx, cy = 2 + i % 4, 3 + i % 3
        box = [cx * 10 - 15.0, cy * 10 - 15.0, cx * 10 + 25.0, cy * 10 + 25.0]
        results.append(_result((80, 80), {i % 2: _blob(cx, cy)}, [box], [i % 2], [0.5 + 0.01 * i]))
        boxes.append(torch.tensor([box]))
        labels.append(torch.tensor([i % 2]))
    return results, q.GroundTruth(boxes, labels, ("a", "b"))


def test_review_simulation_hands_over_only_the_drawn_images_ground_truth() -> None:
    results, gt = _synthetic(12)
    before = copy.deepcopy(gt)
    calls: list[tuple[dict[int, Any], dict[int, Any]]] = []

    def learn(stored: Any, reviewed: Any, params: Any) -> Any:
        calls.append((dict(stored), copy.deepcopy(reviewed)))
        assert all(isinstance(r, q.ImageResult) for r in stored.values())
        return q.learn_from_review(stored, reviewed, params)

    draws = q.simulate_review(results, gt, 2, 4, [0, 1, 2], q.BoxParams(), learn=learn)
    assert len(draws) == len(calls) == 3
    for d, (stored, reviewed) in zip(draws, calls, strict=True):
        assert len(d.drawn) == 4 and sorted(reviewed) == d.drawn and d.scored == 8
        assert d.median_side_cells == pytest.approx(4.0)  # 40 px boxes on 8 x 8 maps of 80 px images
        for i, boxes in reviewed.items():  # exactly the drawn images' ground truth, nothing else
            assert boxes == [(int(lab), box) for box, lab in zip(gt.boxes[i].tolist(), gt.labels[i].tolist(), strict=True)]
        assert sorted(stored) == list(range(12))
    assert len({tuple(d.drawn) for d in draws}) > 1  # seeds give different draws ...
    assert q.simulate_review(results, gt, 2, 4, [1], q.BoxParams())[0].drawn == draws[1].drawn  # ... reproducibly
    assert all(torch.equal(a, b) for a, b in zip(gt.boxes, before.boxes, strict=True))  # the ground truth is untouched
    assert all(torch.equal(a, b) for a, b in zip(gt.labels, before.labels, strict=True))
    returned = q.learn_from_review({i: r for i, r in enumerate(results)}, calls[0][1], q.BoxParams())
    assert sorted(returned) == sorted(set(range(12)) - set(calls[0][1]))  # reviewed images keep their boxes
    with pytest.raises(ValueError, match="--reviewed"):
        q.simulate_review(results, gt, 2, 12, [0], q.BoxParams())


def test_scores_and_centred_baseline_on_known_cases() -> None:
    results, gt = _synthetic(6)
    s = q.score(results, gt, 2)
    assert s[None].corloc == pytest.approx(1.0) and s[None].ap50 == pytest.approx(1.0) and s[None].precision == pytest.approx(1.0)
    assert s[None].boxes == s[None].objects == 6 and s[0].images == 3 and s[1].boxes == 3
    assert s[None].auroc != s[None].auroc  # no wrong box: AUROC undefined (nan), not an error
    # one wrong box with the highest score: AUROC 0, the top half holds it
    results[0] = _result((80, 80), results[0].maps, [[60, 60, 80, 80], *results[0].boxes.tolist()], [0, 0], [0.99, 0.1])
    s = q.score(results, gt, 2)
    assert s[None].auroc == pytest.approx(0.0) and s[None].top_half_precision == pytest.approx(2.5 / 3.5)
    assert s[None].precision == pytest.approx(6 / 7) and s[None].corloc == pytest.approx(5 / 6)
    centred_gt = q.GroundTruth([torch.tensor([[24.0, 24.0, 56.0, 56.0]])], [torch.tensor([0])], ("a",))
    one = [_result((80, 80), {}, [], [], [])]
    base = q.centred_baseline(one, [[0]], centred_gt)
    assert base[0.4] == pytest.approx(1.0) and base[0.8] == pytest.approx(0.0)
    assert q.best_centred(base) == (0.4, pytest.approx(1.0))


def test_second_run_is_served_from_the_cache(coco_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = q.load_collection(coco_dir)
    first = q.Timing()
    results = q.product_results(c, _cfg(tmp_path), first).results
    assert first.train_s is not None and first.infer_s is not None

    def fail(*a: Any, **kw: Any) -> Any:
        raise AssertionError("recomputed although cached")

    import camcore.localizer
    import camcore.training

    monkeypatch.setattr(camcore.training, "train_head", fail)  # what train() and infer() call
    monkeypatch.setattr(camcore.localizer, "Localizer", fail)
    again = q.Timing()
    cached = q.product_results(c, _cfg(tmp_path), again).results
    assert again.train_s is None and again.infer_s is None and "cached" in again.describe()
    for a, b in zip(results, cached, strict=True):
        assert torch.equal(a.boxes, b.boxes) and a.image_size == b.image_size
        assert all(torch.equal(a.maps[k].half().float(), b.maps[k]) for k in a.maps)
    with pytest.raises(AssertionError, match="recomputed"):  # other box params: new results, same model
        q.product_results(c, _cfg(tmp_path, box_params={"mode": "largest"}), q.Timing())


def test_the_cache_key_follows_every_camcore_source_but_the_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "camcore"
    (package / "boxes").mkdir(parents=True)
    for rel in ("__init__.py", "metrics.py", "localizer.py", "boxes/__init__.py", "boxes/score.py"):
        (package / rel).write_text(f"# {rel}\n")
    monkeypatch.setattr(q.camcore, "__file__", str(package / "__init__.py"))
    first = q._source_digest(q.train)
    (package / "metrics.py").write_text("# scoring only\n")
    assert q._source_digest(q.train) == first  # a metric does not change what the product proposes
    (package / "boxes" / "score.py").write_text("# another box score\n")
    second = q._source_digest(q.train)
    assert second != first  # a box rule or score in a subpackage does
    (package / "localizer.py").write_text("# another localizer\n")
    assert q._source_digest(q.train) not in (first, second)
    assert q._source_digest(q.train) != q._source_digest(q.infer)


def test_main_prints_tables_and_the_quality_line(coco_dir: Path, voc_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import camcore.allocator

    monkeypatch.setattr(camcore.allocator, "keep_freed_memory", lambda: None)  # process-wide malloc settings: not in tests
    argv = ["--dataset", str(coco_dir), "--dataset", str(voc_dir), "--arch", "tiny_cnn", "--input-size", "32",
            "--cache", str(tmp_path / "cache"), "--reviewed", "2", "--seeds", "2", "--threads", "1"]
    assert q.main(argv) == 0
    out = capsys.readouterr().out
    assert "### tinycoco" in out and "### tinyvoc" in out and "| **all** |" in out and "green (not tagged)" in out
    assert "centred box CorLoc@0.5: 40%" in out and "reviewed 2 images (seeds 0..1)" in out
    assert re.search(r"reviewed objects' median side: \d+\.\d\d to \d+\.\d\d map cells over the draws "
                     r"\(calibrate says to train larger under 2\.41: in [0-2] of 2 draws\)", out)
    last = out.strip().splitlines()[-1]
    m = re.fullmatch(r"quality: corloc=(\S+) ap50=(\S+) auroc=(\S+) top_half_precision=(\S+) corloc_after_review=(\S+)", last)
    assert m is not None, last
    assert 0.0 <= float(m.group(1)) <= 1.0 and 0.0 <= float(m.group(5)) <= 1.0


def test_after_review_box_bench_times_the_cached_collections(coco_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = bench_module("after_review_boxes.py")
    assert bench.main(["--cache", str(tmp_path / "empty"), "--passes", "1"]) == 1
    assert "run bench/quality.py first" in capsys.readouterr().err
    q.product_results(q.load_collection(coco_dir), _cfg(tmp_path), q.Timing())
    assert bench.main(["--cache", str(tmp_path / "cache"), "--passes", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"{coco_dir.name}-32: \d+\.\d\d ms/image without the agreement, \d+\.\d\d with it \(x\d+\.\d\d\)", lines[0]), lines


def test_calibration_cost_bench_times_the_fit_and_apply(coco_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = bench_module("calibration_cost.py")
    assert bench.main(["--cache", str(tmp_path / "empty")]) == 1
    assert "run bench/quality.py first" in capsys.readouterr().err
    q.product_results(q.load_collection(coco_dir), _cfg(tmp_path), q.Timing())
    assert bench.main(["--cache", str(tmp_path / "cache"), "--collection", "no-such-collection"]) == 1
    capsys.readouterr()
    assert bench.main(["--cache", str(tmp_path / "cache"), "--collection", coco_dir.name]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"{coco_dir.name}-32: calibrate \d+\.\d\d s \(\d+ reviewed\), apply \d+\.\d\d ms/image over \d+ images", lines[0]), lines


def test_box_scorer_bench_fits_on_the_cached_collections(coco_dir: Path, voc_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    bench = bench_module("box_scorer.py")
    tiny = ["--cache", str(tmp_path / "cache"), "--arch", "tiny_cnn", "--input-size", "32"]
    with pytest.raises(SystemExit):  # one collection cannot be left out
        bench.main(["--dataset", str(coco_dir), *tiny])
    assert "at least two collections" in capsys.readouterr().err
    code = bench.main(["--dataset", str(coco_dir), "--dataset", str(voc_dir), "--random-tags", "2", *tiny])
    out, err = capsys.readouterr()
    assert code == 0, err  # the seeded tiny models propose right and wrong boxes in each collection
    assert "no random-tag copy of tinycoco: --random-tags needs one tag per image" in err
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    assert [r.split(" | ")[0] for r in rows] == ["| tinycoco", "| tinyvoc", "| tinyvoc-random2"], rows
    assert re.fullmatch(r"box_scorer: leave_one_out_auroc=\S+ default_auroc=\S+", out.strip().splitlines()[-1])
