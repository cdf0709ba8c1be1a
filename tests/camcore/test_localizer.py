"""Localizer: batching, mixed image sizes, stored maps reproduce boxes without the model."""

from __future__ import annotations

import pytest
import torch

from camcore.boxes import BoxParams, boxes_from_maps, register_box_rule
from camcore.concept_maps import decode_map, encode_map
from camcore.localizer import Localizer
from camcore.transforms import preprocess


def test_boxes_recomputed_from_stored_maps_match(trained_shapes) -> None:  # type: ignore[no-untyped-def]
    ts = trained_shapes
    params = BoxParams(method="cam", threshold=0.3, mode="multi", min_area=0.02, normalize="max")
    results = Localizer(ts.model, ts.spec, params=params).localize(ts.test_images[:10], ts.test_tags[:10])
    for r in results:
        stored = {c: decode_map(encode_map(m)) for c, m in r.maps.items()}  # float16 round trip
        b, s, lab = boxes_from_maps(stored, r.image_size, params, class_scores=r.class_scores)
        assert torch.equal(lab, r.labels)
        assert torch.allclose(b, r.boxes, atol=1.0)
        assert torch.allclose(s, r.scores, atol=1e-2)
    # another threshold needs no model pass: a higher one never gives a larger box
    r = results[0]
    tight, _, _ = boxes_from_maps(r.maps, r.image_size, BoxParams(method="cam", mode="largest", threshold=0.7))
    loose, _, _ = boxes_from_maps(r.maps, r.image_size, BoxParams(method="cam", mode="largest", threshold=0.1))
    area = lambda b: float((b[0, 2] - b[0, 0]) * (b[0, 3] - b[0, 1]))  # noqa: E731
    assert area(tight) <= area(loose)


def test_batching_and_image_sizes(trained_shapes, device) -> None:  # type: ignore[no-untyped-def]
    ts = trained_shapes
    images = [ts.test_images[0].resize((128, 64)), ts.test_images[1], ts.test_images[2].resize((50, 90))]
    tags = [[0], [], [2, 1]]
    # probe=False: these batch sizes as given, float32 (on CUDA a probe would pick its own)
    one_batch = Localizer(ts.model, ts.spec, device=device, batch_size=8, probe=False).localize(images, tags)
    by_one = Localizer(ts.model, ts.spec, device=device, batch_size=1, probe=False).localize(images, tags)
    assert [r.image_size for r in one_batch] == [(128, 64), (64, 64), (50, 90)]
    assert one_batch[1].boxes.shape == (0, 4) and one_batch[1].maps == {}
    assert set(one_batch[2].maps) == {1, 2}
    for a, b in zip(one_batch, by_one, strict=True):
        assert torch.allclose(a.boxes, b.boxes, atol=1e-3)
        assert a.boxes.device.type == "cpu"
        w, h = a.image_size
        if len(a.boxes):
            assert (a.boxes[:, [0, 2]] <= w).all() and (a.boxes[:, [1, 3]] <= h).all() and (a.boxes >= 0).all()
        assert a.class_scores.shape == (3,) and ((a.class_scores >= 0) & (a.class_scores <= 1)).all()
    assert Localizer(ts.model, ts.spec).localize([], None) == []


def test_preprocess_and_input_validation(trained_shapes) -> None:  # type: ignore[no-untyped-def]
    ts = trained_shapes
    batch = preprocess([ts.test_images[0].convert("L"), ts.test_images[1]], 32)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == torch.uint8
    loc = Localizer(ts.model, ts.spec)
    with pytest.raises(ValueError, match="tag lists"):
        loc.localize(ts.test_images[:2], [[0]])
    with pytest.raises(ValueError, match="uint8"):
        loc.localize_batch(batch.float(), [(1, 1), (1, 1)])
    with pytest.raises(ValueError, match="map method"):
        Localizer(ts.model, ts.spec, params=BoxParams(method="nope"))


def test_custom_box_rule_plugs_in(trained_shapes) -> None:  # type: ignore[no-untyped-def]
    def whole_image(norm, size, params):  # type: ignore[no-untyped-def]
        return torch.tensor([[0.0, 0.0, float(size[0]), float(size[1])]]), torch.ones(1)

    register_box_rule("test_whole_image", whole_image, replace=True)
    ts = trained_shapes
    r = Localizer(ts.model, ts.spec, params=BoxParams(mode="test_whole_image")).localize(ts.test_images[:1], ts.test_tags[:1])[0]
    assert r.boxes.tolist() == [[0.0, 0.0, 64.0, 64.0]]


def test_reduced_scale_decode_gives_boxes_in_original_pixels(trained_shapes, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A large JPEG loaded with ``min_size`` (DCT-scaled decode) is localised in its full-size pixels."""
    from PIL import Image

    from camcore.images import load_image

    ts = trained_shapes
    params = BoxParams(method="cam", mode="largest", threshold=0.2, normalize="max")
    loc = Localizer(ts.model, ts.spec, params=params)
    for k in range(4):
        path = tmp_path / f"big{k}.jpg"
        big = ts.test_images[k].resize((ts.test_images[k].width * 10, ts.test_images[k].height * 8), Image.Resampling.BILINEAR)
        big.save(path, quality=95)
        full = load_image(path)
        reduced = load_image(path, min_size=ts.spec.input_size)
        assert reduced.size[0] < full.size[0]  # really decoded smaller
        a, b = loc.localize([full, reduced], [ts.test_tags[k], ts.test_tags[k]])
        assert a.image_size == b.image_size == full.size
        assert a.boxes.shape == b.boxes.shape and a.boxes.shape[0] >= 1
        assert torch.allclose(a.boxes, b.boxes, atol=0.04 * max(full.size))
