"""The streaming path: loader processes and threads give the same batches as load_image + preprocess
(real photos, PNG, CMYK, truncated, EXIF-rotated, broken files), box worker processes give the
same boxes as the box rule inline, and the measured forward choice keeps the function."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from camcore.boxes import BoxParams, boxes_from_maps
from camcore.boxes.workers import BoxWorkers, MapsOfImage
from camcore.forward_choice import _CHOICES, choose_forward, forward_candidates, probe_forward
from camcore.images import ImageLoadError, load_image, original_size
from camcore.localizer import ImageResult, Localizer
from camcore.models import ModelSpec, build_model
from camcore.streaming import LoadedBatch, stream_batches
from camcore.transforms import preprocess
from tests.prerequisites import shared_datasets

DATASET = shared_datasets() / "raccoon-kangaroo"
needs_photos = pytest.mark.usefixtures("shared_dataset")  # skipped without the dev photos, failed under CI


def _photos(n: int) -> list[Path]:
    raccoons = sorted((DATASET / "raccoon" / "images").glob("*.jpg"))[: n - n // 2]
    kangaroos = sorted((DATASET / "kangaroo" / "images").glob("*.jpg"))[: n // 2]
    return [p for pair in zip(raccoons, kangaroos, strict=False) for p in pair] + raccoons[len(kangaroos):]


def _awkward_files(tmp_path: Path) -> list[Path]:
    """A PNG with alpha, a CMYK JPEG, a truncated JPEG, an EXIF-rotated JPEG and a broken file,
    all made from a real photo."""
    photo = Image.open(_photos(1)[0]).convert("RGB")
    png = tmp_path / "alpha.png"
    photo.convert("RGBA").save(png)
    cmyk = tmp_path / "cmyk.jpg"
    photo.convert("CMYK").save(cmyk, quality=90)
    truncated = tmp_path / "truncated.jpg"
    photo.save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    photo.resize((photo.width * 3, photo.height * 3)).save(rotated, quality=90, exif=exif)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    return [png, cmyk, truncated, rotated, broken]


def _expected(sources: list[Path], size: int) -> tuple[torch.Tensor, list[tuple[int, int]], list[int]]:
    images, failed = [], []
    for k, s in enumerate(sources):
        try:
            images.append(load_image(s, min_size=size))
        except ImageLoadError:
            failed.append(k)
    return preprocess(images, size), [original_size(im) for im in images], failed


@needs_photos
def test_loader_processes_and_threads_give_today_s_batches(tmp_path: Path) -> None:
    sources = _photos(5)[:2] + _awkward_files(tmp_path) + _photos(5)[2:]
    pixels, sizes, failed = _expected(sources, 224)
    with ThreadPoolExecutor(2) as pool:
        for kind, kwargs in (("processes", {"workers": 2}), ("threads", {"executor": pool})):
            batches = list(stream_batches(sources, 224, 4, kind=kind, **kwargs))  # type: ignore[arg-type]
            assert [b.start for b in batches] == [0, 4, 8]
            assert torch.equal(torch.cat([b.pixels for b in batches]), pixels), kind
            assert [s for b in batches for s in b.sizes] == sizes
            failures = [(p, e) for b in batches for p, e in b.failures]
            assert [p for p, _ in failures] == failed == [6]  # the broken file, in its place
            assert isinstance(failures[0][1], ImageLoadError) and "not a recognised image format" in failures[0][1].reason
            positions = [p for b in batches for p in b.positions]
            assert positions == [k for k in range(len(sources)) if k != 6]
    rotated = load_image(sources[5])  # EXIF orientation 6: displayed portrait
    assert sizes[positions.index(5)] == rotated.size and rotated.height > rotated.width


def test_load_errors_cross_processes_with_their_reason() -> None:
    err = pickle.loads(pickle.dumps(ImageLoadError("empty file (0 bytes)", "a.jpg")))
    assert (err.reason, err.source, str(err)) == ("empty file (0 bytes)", "a.jpg", "a.jpg: empty file (0 bytes)")
    batch = LoadedBatch(start=0, positions=[], pixels=torch.zeros((0, 3, 4, 4), dtype=torch.uint8), sizes=[])
    with pytest.raises(ValueError, match="loader kind"):
        next(stream_batches([], 4, 1, kind="gpu"))
    assert batch.failures == []


@pytest.fixture(scope="module")
def photo_model() -> tuple[torch.nn.Module, ModelSpec]:
    """EfficientNet-Lite0 with ImageNet weights and a head seeded at random: real feature maps."""
    torch.manual_seed(0)
    spec = ModelSpec(class_names=["raccoon", "kangaroo"], input_size=224)
    return build_model(spec, weights="imagenet").eval(), spec


@pytest.mark.slow  # starts box worker processes
@needs_photos
def test_box_worker_processes_give_the_boxes_of_the_rule_inline(photo_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, spec = photo_model
    sources = _photos(6) + [_awkward_files(tmp_path)[-1]]
    params = BoxParams()  # the default rule: DDT-fused CAM, components by activation mass
    inline = Localizer(model, spec, params=params, batch_size=4, box_workers=0)
    pooled = Localizer(model, spec, params=params, batch_size=4, box_workers=2, loader="processes", loader_workers=2)
    assert pooled.boxes.processes == 2 and inline.boxes.processes == 0
    try:
        for tags in (None, [[0], [1], [0, 1], [1], [0], [1], [0]]):
            a = list(inline.localize_files(sources, tags))
            b = list(pooled.localize_files(sources, tags))
            assert [p for p, _ in a] == [p for p, _ in b] == list(range(len(sources)))
            assert isinstance(a[-1][1], ImageLoadError) and isinstance(b[-1][1], ImageLoadError)
            boxes = 0
            for (_, ra), (_, rb) in zip(a[:-1], b[:-1], strict=True):
                assert isinstance(ra, ImageResult) and isinstance(rb, ImageResult)
                assert ra.image_size == rb.image_size
                assert torch.equal(ra.boxes, rb.boxes) and torch.equal(ra.labels, rb.labels)
                # box scores sum the map with torch's threads (one per box worker): the last bit may differ
                assert torch.allclose(ra.scores, rb.scores, rtol=1e-5, atol=1e-7)
                # and the rule applied to the returned maps gives them again
                again = boxes_from_maps(rb.maps, rb.image_size, params, class_scores=rb.class_scores if tags is None else None)
                assert torch.equal(again[0], rb.boxes) and torch.allclose(again[1], rb.scores, rtol=1e-5, atol=1e-7)
                boxes += len(rb.boxes)
            assert boxes >= 6  # at least one box per photo
    finally:
        pooled.close()
    assert pooled.boxes.processes == 0


def test_box_workers_split_a_batch_and_keep_its_order(trained_shapes) -> None:  # type: ignore[no-untyped-def]
    ts = trained_shapes
    params = BoxParams(method="cam", mode="multi", threshold=0.3, min_area=0.02)
    results = Localizer(ts.model, ts.spec, params=params).localize(ts.test_images[:9], ts.test_tags[:9])
    images = [MapsOfImage(r.maps, r.image_size, r.class_scores) for r in results]
    workers = BoxWorkers(3)
    try:
        pooled = workers.submit(params, images).result()
    finally:
        workers.close()
    for im, (b, s, lab) in zip(images, pooled, strict=True):
        eb, es, el = boxes_from_maps(im.maps, im.image_size, params, class_scores=im.class_scores)
        assert torch.equal(b, eb) and torch.equal(lab, el) and torch.allclose(s, es, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="processes"):
        BoxWorkers(-1)


@pytest.mark.slow  # times each forward variant
def test_forward_probe_keeps_the_function_and_is_cached_per_process(trained_shapes) -> None:  # type: ignore[no-untyped-def]
    ts = trained_shapes
    device = torch.device("cpu")
    calls: list[object] = []

    def network(variant):  # type: ignore[no-untyped-def]
        calls.append(variant)
        return ts.model.to(memory_format=variant.memory_format)

    candidates = forward_candidates(device, 4, None)
    assert len(candidates) == 4 and {(v.prepared, v.channels_last) for v in candidates} == {(True, True), (True, False), (False, True), (False, False)}
    timings = probe_forward(network, 64, device, candidates, rounds=1, warmup=1)
    assert all(t.images_per_s > 0 and t.max_rel_diff < 1e-4 for t in timings)
    _CHOICES.clear()
    key = ("test", 64)
    choice = choose_forward(network, 64, device, batch_size=4, batch_sizes=(8,), cache_key=key, probe=True)
    assert choice.batch_size in (4, 8) and choice.autocast_dtype is None
    probed = len(calls)
    assert choose_forward(network, 64, device, batch_size=4, batch_sizes=(8,), cache_key=key, probe=True) == choice
    assert len(calls) == probed  # cached: no second probe
    # a CPU without probe keeps the measured default: prepared, channels-last, float32
    default = choose_forward(network, 64, device, batch_size=16)
    assert (default.prepared, default.channels_last, default.autocast_dtype, default.batch_size) == (True, True, None, 16)
    probed_loc = Localizer(ts.model, ts.spec, probe=True)
    plain = Localizer(ts.model, ts.spec)
    a = probed_loc.localize(ts.test_images[:6], ts.test_tags[:6])
    b = plain.localize(ts.test_images[:6], ts.test_tags[:6])
    for ra, rb in zip(a, b, strict=True):
        assert torch.allclose(ra.class_scores, rb.class_scores, atol=1e-4)
        assert torch.allclose(ra.boxes, rb.boxes, atol=1.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@needs_photos
def test_streaming_on_cuda_matches_float32_on_real_photos(photo_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The probed variant (bf16/fp16 autocast, larger batches), loader processes and box processes
    localise the dev photos as the float32 network does, within autocast's tolerance."""
    model, spec = photo_model
    sources = _photos(12) + _awkward_files(tmp_path)
    exact = Localizer(model, spec, device="cuda", probe=False, box_workers=0, loader="threads")
    fast = Localizer(model, spec, device="cuda")
    try:
        assert fast.loader == "processes" and fast.boxes.processes >= 1
        assert fast.variant.autocast_dtype in (torch.bfloat16, torch.float16, None)
        a = list(exact.localize_files(sources))
        b = list(fast.localize_files(sources))
    finally:
        fast.close()
    assert [p for p, _ in a] == [p for p, _ in b] == list(range(len(sources)))
    agree = 0
    for (_, ra), (_, rb) in zip(a, b, strict=True):
        assert type(ra) is type(rb)
        if isinstance(ra, ImageResult) and isinstance(rb, ImageResult):
            assert ra.image_size == rb.image_size
            assert torch.allclose(ra.class_scores, rb.class_scores, atol=0.05)
            if torch.equal(ra.labels, rb.labels) and len(ra.boxes) == len(rb.boxes):
                agree += int(torch.allclose(ra.boxes, rb.boxes, atol=0.05 * max(ra.image_size)))
    assert agree >= 0.8 * sum(isinstance(r, ImageResult) for _, r in a)
