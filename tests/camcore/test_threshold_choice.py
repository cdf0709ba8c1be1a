"""The collection's box threshold chosen without ground truth (camcore.threshold_choice).

The choice on real collections (cards get a fixed threshold, raccoon-kangaroo keeps the mean rule)
is tested in ``tests/camcore/quality/test_real_collections.py``; here: the decision rule, the
model's defaults, the crop geometry and a run through a real (tiny) classifier.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from camcore.boxes import BoxParams
from camcore.localizer import Localizer
from camcore.models import ModelSpec
from camcore.threshold_choice import (
    CANDIDATES,
    MIN_PAIRS,
    REPORT_KEY,
    SPEC_KEY,
    _crop,
    choose_threshold,
    crop_size,
    decide,
    model_box_params,
)

NAMES = ["mean", *(f"{t:g}" for t in CANDIDATES)]


def _table(pairs: int, lift: dict[float, float], seed: int = 0) -> np.ndarray:
    """Crop probabilities: every column the same noisy base, plus ``lift[candidate]``."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 0.9, size=pairs)
    cols = [base] + [np.clip(base + lift.get(t, 0.0) + rng.normal(0, 0.02, pairs), 0, 1) for t in CANDIDATES]
    return np.stack(cols, axis=1)


def test_a_threshold_whose_crops_are_recognised_better_replaces_the_mean_rule() -> None:
    choice = decide(_table(200, {0.5: 0.05}), CANDIDATES)
    assert choice.threshold == 0.5
    assert choice.p_values["0.5"] < 1e-6 and choice.pairs == 200
    assert set(choice.mean_probability) == set(NAMES)
    assert "0.5" in choice.reason


def test_of_several_better_thresholds_the_best_recognised_wins() -> None:
    choice = decide(_table(300, {0.3: 0.02, 0.4: 0.06, 0.6: 0.04}), CANDIDATES)
    assert choice.threshold == 0.4


def test_the_mean_rule_stays_when_no_difference_is_significant() -> None:
    choice = decide(_table(300, {}), CANDIDATES)
    assert choice.threshold is None
    assert min(choice.p_values.values()) >= 0.01
    # a lift that exists but is worse than the mean rule's crops never wins
    worse = decide(_table(300, {0.5: -0.1, 0.7: -0.2}), CANDIDATES)
    assert worse.threshold is None and worse.p_values["0.5"] > 0.5


def test_a_significant_but_negligible_gain_keeps_the_mean_rule() -> None:
    """A classifier sure of almost every crop: 0.994 vs 0.997 is significant over 300 pairs, not a reason."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.985, 0.999, size=300)
    cols = [base] + [np.clip(base + (0.003 if t == 0.3 else 0.0) + rng.normal(0, 0.002, 300), 0, 1) for t in CANDIDATES]
    choice = decide(np.stack(cols, axis=1), CANDIDATES)
    assert choice.p_values["0.3"] < 1e-6 and choice.threshold is None
    assert "0.01 or more" in choice.reason


def test_identical_boxes_are_not_tested_and_few_pairs_keep_the_mean_rule() -> None:
    same = np.tile(np.linspace(0.2, 0.9, 50)[:, None], (1, len(NAMES)))
    choice = decide(same, CANDIDATES)
    assert choice.threshold is None and set(choice.p_values.values()) == {1.0}
    few = decide(_table(MIN_PAIRS - 1, {0.5: 0.3}), CANDIDATES)
    assert few.threshold is None and few.pairs == MIN_PAIRS - 1 and "needed" in few.reason
    with pytest.raises(ValueError, match="table must be"):
        decide(np.zeros((30, 3)), CANDIDATES)


def test_the_model_spec_carries_the_default_and_explicit_fields_win() -> None:
    spec = ModelSpec(arch="tiny_cnn", class_names=["a"], input_size=64, extra={SPEC_KEY: {"threshold": 0.5}})
    assert model_box_params(spec).threshold == 0.5
    assert model_box_params(spec, {"threshold": 0.3}).threshold == 0.3
    assert model_box_params(spec, {"nms_iou": 0.4}).threshold == 0.5
    plain = ModelSpec(arch="tiny_cnn", class_names=["a"], input_size=64)
    assert model_box_params(plain) == BoxParams()
    with pytest.raises(ValueError, match="unknown BoxParams fields"):
        model_box_params(plain, {"thresold": 0.3})
    # the spec round-trips through its dict form (how checkpoints and model versions store it)
    assert model_box_params(ModelSpec.from_dict(spec.to_dict())).threshold == 0.5
    # a choice stored in a spec's extra: the report always, the threshold only when one was chosen
    chosen = decide(_table(200, {0.5: 0.05}), CANDIDATES).stored_in({"objectness": {"kept": True}})
    assert chosen[SPEC_KEY] == {"threshold": 0.5} and chosen[REPORT_KEY]["threshold"] == 0.5
    assert chosen["objectness"] == {"kept": True}
    kept = decide(_table(200, {}), CANDIDATES).stored_in(None)
    assert SPEC_KEY not in kept and kept[REPORT_KEY]["threshold"] is None
    assert model_box_params(ModelSpec(arch="tiny_cnn", class_names=["a"], input_size=64, extra=chosen)).threshold == 0.5


def test_a_box_in_file_pixels_is_cut_from_an_image_decoded_smaller() -> None:
    full = Image.new("RGB", (400, 200), (0, 0, 0))
    full.paste((255, 0, 0), (100, 50, 200, 150))  # the red square, in file pixels
    half = full.resize((200, 100), Image.NEAREST)  # decoded at half scale, as large JPEGs are
    crop = _crop(half, torch.tensor([100.0, 50.0, 200.0, 150.0]), (400, 200))
    assert crop.size == (50, 50)
    assert np.asarray(crop).reshape(-1, 3).mean(axis=0).round().tolist() == [255, 0, 0]
    tiny = _crop(half, torch.tensor([10.0, 10.0, 10.4, 10.4]), (400, 200))  # never an empty crop
    assert tiny.size[0] >= 1 and tiny.size[1] >= 1


def test_a_real_classifier_scores_the_crops_of_every_rule(trained_shapes) -> None:  # type: ignore[no-untyped-def]
    """The tiny shape classifier's own maps, boxed by each rule, cropped and classified."""
    model, spec = trained_shapes.model, trained_shapes.spec
    images, tags = trained_shapes.test_images[:40], trained_shapes.test_tags[:40]
    localizer = Localizer(model, spec, params=BoxParams())
    try:
        results = localizer.localize(images, tags)
    finally:
        localizer.close()
    choice = choose_threshold(model, spec, images, [r.maps for r in results], [r.image_size for r in results], tags)
    assert choice.pairs == sum(len(set(t)) for t in tags)
    assert set(choice.mean_probability) == set(NAMES) and set(choice.p_values) == set(NAMES[1:])
    assert all(0.0 <= v <= 1.0 for v in choice.mean_probability.values())
    assert choice.threshold is None or choice.threshold in CANDIDATES
    report = choice.to_dict()
    assert report["pairs"] == choice.pairs and report["reason"] == choice.reason
    assert choice.stored_in(None)[REPORT_KEY] == report
    with pytest.raises(ValueError, match="same length"):
        choose_threshold(model, spec, images, [r.maps for r in results], [], tags)


def test_crops_are_classified_at_half_the_network_input() -> None:
    assert crop_size(ModelSpec(arch="efficientnet_lite0", class_names=["a"], input_size=448)) == 224
    assert crop_size(ModelSpec(arch="tiny_cnn", class_names=["a"], input_size=40)) == 32


def test_the_classifier_is_not_asked_about_crops_of_tags_it_does_not_tell_apart(trained_shapes, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Crops of tags the classifier does not tell apart on held-out images say nothing about the
    box: the mean rule stays without a test (and without a localisation pass)."""
    from camcore.separability import SPEC_KEY as SEPARABILITY_KEY
    from camcore.threshold_choice import fit_threshold_choice

    model, spec = trained_shapes.model, trained_shapes.spec
    images, tags = trained_shapes.test_images[:40], trained_shapes.test_tags[:40]
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])

    def with_verdict(told: bool) -> ModelSpec:
        tests = {name: {"ap": 0.5, "prevalence": 0.3, "positives": 5, "n": 20, "p_value": 0.001 if told else 0.4,
                        "testable": True, "separable": told} for name in spec.class_names}
        stored = {"told_apart": told, "classes": tests}
        return ModelSpec.from_dict({**spec.to_dict(), "extra": {**spec.extra, SEPARABILITY_KEY: stored}})

    every = fit_threshold_choice(model, spec, paths, tags)
    assert every.pairs == sum(len(set(t)) for t in tags)
    told = fit_threshold_choice(model, with_verdict(True), paths, tags)
    assert told.to_dict() == every.to_dict()
    none = fit_threshold_choice(model, with_verdict(False), paths, tags)
    assert none.threshold is None and none.pairs == 0 and "does not tell the tags apart" in none.reason
