"""DDT objectness (camcore.objectness) on generated images with a planted common object."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from camcore.boxes import upsample_map
from camcore.objectness import (
    SPEC_KEY,
    DdtAccumulator,
    ObjectnessStats,
    capture_descriptors,
    fit_objectness,
    fuse_maps,
    minmax,
    objectness_maps,
)
from camcore.transforms import preprocess


def _inside_mask(boxes: list, size: int) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


@pytest.mark.slow  # trains the planted-object model
def test_ddt_map_highlights_the_planted_common_object(planted) -> None:  # type: ignore[no-untyped-def]
    stats = fit_objectness(planted.model, planted.spec, planted.train_images, planted.train_tags, batch_size=16)
    assert bool(stats.valid[0]) and abs(float(stats.direction[0].norm()) - 1.0) < 1e-4
    restored = ObjectnessStats.from_dict(json.loads(json.dumps(stats.to_dict())))  # JSON round trip
    assert torch.allclose(restored.direction, stats.direction, atol=1e-5)

    spec = planted.spec
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    x = (preprocess(planted.train_images, spec.input_size).float() / 255 - mean) / std
    with torch.no_grad():
        feats = planted.model.features(x)
    n = len(planted.train_images)
    maps = objectness_maps(feats, restored, torch.arange(n), torch.zeros(n, dtype=torch.long))
    peak_inside, contrast = 0, []
    for m, boxes in zip(maps, planted.train_boxes, strict=True):
        up = upsample_map(m, (96, 96))
        inside = _inside_mask(boxes, 96)
        peak_inside += bool(inside.flatten()[int(up.argmax())])
        contrast.append(float(up[inside].mean() - up[~inside].mean()) / (float(up.std()) + 1e-9))
    assert peak_inside >= 0.9 * n, f"peak on the object in {peak_inside}/{n} images"
    assert np.median(contrast) > 1.0


def test_accumulator_orients_the_component_towards_the_cam_and_validates_input() -> None:
    rng = np.random.default_rng(0)
    feats = torch.from_numpy(rng.normal(0, 0.1, size=(4, 8, 6, 6))).float()
    feats[:, 3, 1:3, 1:3] += 5.0  # the object: strong on channel 3, top-left
    cams = [{0: (feats[i, 3] > 1).float()} for i in range(4)]
    acc = DdtAccumulator(2, 8)
    acc.update(feats, [[0]] * 4, cams)
    stats = acc.finalize()
    assert stats.valid.tolist() == [True, False]  # class 1 has no images
    assert float(stats.direction[0, 3]) > 0.9  # the object side is positive
    m = objectness_maps(feats, stats, torch.arange(4), torch.zeros(4, dtype=torch.long))
    assert float(m[:, 1:3, 1:3].min()) > float(m[:, 4:, 4:].max())
    assert torch.equal(objectness_maps(feats, stats, torch.tensor([0]), torch.tensor([1])), torch.zeros(1, 6, 6))
    fused = fuse_maps(torch.rand(4, 6, 6), m)
    assert float(fused.min()) >= 0.0 and float(fused.max()) <= 1.0
    for bad in (lambda: acc.update(feats[:, :4], [[0]] * 4), lambda: acc.update(feats, [[0]] * 3),
                lambda: acc.update(feats, [[5]] * 4), lambda: ObjectnessStats.from_dict({"mean": [1]})):
        try:
            bad()
        except ValueError:
            continue
        raise AssertionError("bad input accepted")


def test_classes_whose_cam_points_away_from_the_object_use_one_pooled_objectness_alone() -> None:
    """The activations orient the component; a class map that correlates negatively with it is
    not used, and such classes share one component fitted on all their pixels."""
    rng = np.random.default_rng(1)
    feats = torch.from_numpy(rng.normal(0, 0.1, size=(6, 8, 6, 6))).float()
    feats[:, 3, 1:3, 1:3] += 5.0  # the object: strong on channel 3, top-left
    activations = feats.clamp(min=0).sum(1)  # high on the object
    on_object = [(feats[i, 3] > 1).float() for i in range(6)]
    tags = [[0], [0], [1], [1], [2], [2]]
    cams = [{t[0]: on_object[i] if t[0] == 0 else -on_object[i]} for i, t in enumerate(tags)]  # 1, 2: background
    acc = DdtAccumulator(3, 8)
    acc.update(feats, tags, cams, activations)
    stats = acc.finalize()
    assert stats.uses_cam is not None and stats.cam_agreement is not None
    assert stats.uses_cam.tolist() == [True, False, False]
    assert float(stats.cam_agreement[0]) > 0.9 and float(stats.cam_agreement[1]) < -0.9
    assert torch.equal(stats.direction[1], stats.direction[2]) and torch.equal(stats.mean[1], stats.mean[2])
    assert float(stats.direction[1, 3]) > 0.9  # oriented towards the object by the activations
    index = torch.tensor([0, 2, 4])
    cls = torch.tensor([0, 1, 2])
    objectness = objectness_maps(feats, stats, index, cls)
    cam = torch.stack([cams[i][int(c)] for i, c in zip(index.tolist(), cls.tolist(), strict=True)])
    fused = fuse_maps(cam, objectness, stats.cam_weights(cls))
    torch.testing.assert_close(fused[0], fuse_maps(cam[:1], objectness[:1])[0])  # the usual half-half
    torch.testing.assert_close(fused[1:], minmax(objectness[1:]))  # the objectness alone
    assert float(fused[1, 1:3, 1:3].min()) > float(fused[1, 4:, 4:].max())
    restored = ObjectnessStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert restored.uses_cam is not None and restored.uses_cam.tolist() == [True, False, False]
    old = {k: v for k, v in stats.to_dict().items() if k not in ("uses_cam", "cam_agreement")}
    assert ObjectnessStats.from_dict(old).uses_cam.tolist() == [True, True, True]  # type: ignore[union-attr]  # stored before
    with pytest.raises(ValueError, match="activations"):
        acc.update(feats, tags, cams, activations[:, :3])


def test_efficientnet_descriptors_are_the_head_conv_input_and_the_hook_is_removed() -> None:
    from camcore.models import ModelSpec, build_model

    spec = ModelSpec(arch="efficientnet_lite0", class_names=["a"], input_size=64)
    model = build_model(spec, weights=None).eval()
    with torch.no_grad(), capture_descriptors(model) as cap:
        out = model.features(torch.zeros(1, 3, 64, 64))
    assert cap["features"].shape == (1, 320, 2, 2) and out.shape == (1, 1280, 2, 2)
    cap.clear()
    with torch.no_grad():
        model.features(torch.zeros(1, 3, 64, 64))
    assert cap == {}  # hook gone after the context
    assert SPEC_KEY == "objectness"


def test_per_image_objectness_equals_the_first_principal_component_of_each_image() -> None:
    """The batched Gram-matrix form gives each pair's own PCA scores, oriented by its CAM."""
    from camcore.objectness import per_image_objectness

    torch.manual_seed(0)
    descriptors = torch.randn(3, 64, 7, 9)
    descriptors[1] += torch.linspace(0, 3, 63).view(1, 7, 9)
    descriptors[2] = 0.0  # no variation: no evidence
    cams = torch.randn(4, 7, 9)
    image_index = torch.tensor([0, 1, 2, 1])
    got = per_image_objectness(descriptors, cams, image_index)
    for p, i in enumerate(image_index.tolist()):
        x = descriptors[i].double().flatten(1).T
        xc = x - x.mean(0)
        if float(xc.abs().max()) == 0.0:
            assert torch.count_nonzero(got[p]) == 0
            continue
        _, _, vh = torch.linalg.svd(xc, full_matrices=False)
        ref = (xc @ vh[0]).float()
        cam = cams[p].flatten()
        if float(((cam - cam.mean()) * ref).sum()) < 0:
            ref = -ref
        torch.testing.assert_close(got[p].flatten(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # trains the planted-object model
def test_the_localizer_returns_each_images_codes_on_the_basis_of_its_training_images(planted) -> None:  # type: ignore[no-untyped-def]
    import copy

    from camcore.localizer import Localizer

    stats = fit_objectness(planted.model, planted.spec, planted.train_images, planted.train_tags, batch_size=16)
    assert stats.basis is not None
    spec = copy.deepcopy(planted.spec)
    spec.extra = {**dict(spec.extra or {}), SPEC_KEY: stats.to_dict()}
    images = planted.train_images[:6]
    results = Localizer(planted.model, spec, prepare=False).localize(images, [[0]] * len(images))
    x = (preprocess(images, spec.input_size).float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad(), capture_descriptors(planted.model) as cap:
        feats = planted.model.features(x)
    expected = stats.basis.project(cap.get("features", feats))
    for r, e in zip(results, expected, strict=True):
        assert r.codes is not None and r.codes.dtype == torch.float16
        assert tuple(r.codes.shape) == (stats.basis.dimensions, *r.maps[0].shape)
        assert torch.allclose(r.codes.float(), e, atol=0.05, rtol=0.01)
    # a model whose statistics predate the basis gives no codes
    old = {k: v for k, v in stats.to_dict().items() if k != "basis"}
    spec.extra = {**dict(spec.extra), SPEC_KEY: old}
    assert all(r.codes is None for r in Localizer(planted.model, spec).localize(images[:2], [[0], [0]]))
