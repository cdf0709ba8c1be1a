"""The held-out test of whether the classifier tells each tag apart, and what it changes."""

from __future__ import annotations

import itertools

import pytest
import torch

from camcore.objectness import DdtAccumulator
from camcore.separability import (
    LEVEL,
    SPEC_KEY,
    ClassSeparability,
    permutation_p_value,
    separability,
    stored_tests,
    stored_verdict,
    told_apart,
)
from camcore.training import average_precision


def _exact_p(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """The exact one-sided p-value: the share of all placements of the positives whose AP is at
    least the observed one."""
    n, m = len(targets), int(targets.sum())
    observed = average_precision(scores, targets)
    assert observed is not None
    hits = 0
    total = 0
    for chosen in itertools.combinations(range(n), m):
        t = torch.zeros(n)
        t[list(chosen)] = 1
        ap = average_precision(scores, t)
        assert ap is not None
        hits += ap >= observed - 1e-12
        total += 1
    return hits / total


def test_the_permutation_p_value_matches_the_exact_one_on_a_small_split() -> None:
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        scores = torch.rand(9, generator=g)
        targets = (torch.rand(9, generator=g) < 0.4).float()
        if not 0 < int(targets.sum()) < 9:
            continue
        ap, p = permutation_p_value(scores, targets, permutations=4000, seed=1)
        assert ap == pytest.approx(average_precision(scores, targets))
        assert p == pytest.approx(_exact_p(scores, targets), abs=0.03)


def test_a_perfect_ranking_reaches_the_smallest_p_and_scores_unrelated_to_the_tags_do_not() -> None:
    g = torch.Generator().manual_seed(0)
    targets = torch.zeros(60)
    targets[:12] = 1
    perfect = targets + 0.01 * torch.rand(60, generator=g)
    ap, p = permutation_p_value(perfect, targets)
    assert ap == 1.0 and p == pytest.approx(1 / 1000)
    unrelated = torch.rand(60, generator=g)
    _, p = permutation_p_value(unrelated, targets)
    assert p > 0.1
    with pytest.raises(ValueError, match="both tagged and untagged"):
        permutation_p_value(unrelated, torch.zeros(60))
    with pytest.raises(ValueError, match="Tensor\\[N\\]"):
        permutation_p_value(unrelated, targets[:10])


def test_each_class_is_tested_and_the_collection_follows_most_testable_classes() -> None:
    g = torch.Generator().manual_seed(1)
    n = 70
    targets = torch.zeros(n, 4)
    targets[:20, 0] = 1
    targets[20:40, 1] = 1
    targets[40:69, 2] = 1
    targets[69, 3] = 1  # one tagged held-out image: 1/70 > LEVEL even for a perfect ranking
    noise = torch.rand(n, 4, generator=g)
    probs = noise.clone()
    probs[:, 0] = targets[:, 0] * 0.5 + 0.5 * noise[:, 0]  # told apart
    probs[:, 1] = targets[:, 1] * 0.5 + 0.5 * noise[:, 1]  # told apart
    probs[:, 3] = targets[:, 3]  # perfect, but untestable
    names = ["a", "b", "c", "d"]
    out = separability(probs, targets, names)
    assert out["a"].separable and out["b"].separable and out["a"].p_value is not None and out["a"].p_value < LEVEL
    assert out["c"].testable and out["c"].p_value is not None and out["c"].p_value > LEVEL and out["c"].separable is False
    assert not out["d"].testable and out["d"].p_value is None and out["d"].ap == 1.0 and out["d"].separable is None
    assert told_apart(out) is True  # two of the three testable classes
    probs[:, 3] = 1 - targets[:, 3]  # the worst ranking: still recorded, still untestable
    assert separability(probs, targets, names)["d"].ap == pytest.approx(1 / 70)
    for entry in out.values():
        assert ClassSeparability.from_dict(entry.to_dict()) == ClassSeparability(**entry.to_dict())
    # the collection's verdict is what acts (on every class, "c" included)
    assert stored_verdict({SPEC_KEY: stored_tests(out)}) is True
    # most testable classes not told apart: every class map is set aside
    probs[:, 1] = noise[:, 2]
    worse = separability(probs, targets, names)
    assert told_apart(worse) is False
    stored = stored_tests(worse)
    assert stored["told_apart"] is False and stored["classes"]["b"]["separable"] is False
    assert stored_verdict({SPEC_KEY: stored}) is False
    # nothing stored, or nothing testable: nothing known
    assert stored_verdict({}) is None and stored_verdict(None) is None
    none = separability(probs[:5], targets[:5], names)
    assert all(v.separable is None for v in none.values()) and told_apart(none) is None
    assert stored_verdict({SPEC_KEY: stored_tests(none)}) is None
    with pytest.raises(ValueError, match="malformed separability"):
        stored_verdict({SPEC_KEY: {"a": {"ap": 0.5}}})
    with pytest.raises(ValueError, match="malformed separability entry"):
        ClassSeparability.from_dict({"ap": 0.5})
    with pytest.raises(ValueError, match="must be \\[N, 4\\]"):
        separability(probs[:, :3], targets, names)


def test_a_class_the_classifier_does_not_tell_apart_is_boxed_by_the_objectness_alone() -> None:
    """Its class map agrees with the objectness here, yet it carries no location the classifier
    learned: the statistics set it apart as they do classes whose map disagrees."""
    g = torch.Generator().manual_seed(2)
    acc = DdtAccumulator(3, 4)
    for _ in range(6):
        feats = torch.randn(3, 4, 5, 5, generator=g)
        feats[:, 0, 1:4, 1:4] += 4.0  # the object: high on channel 0
        act = feats[:, 0].clone()
        cams = [{c: feats[i, 0].clone() for c in range(3)} for i in range(3)]  # every class map agrees
        acc.update(feats, [[0], [1], [2]], cams, act)
    agreeing = acc.finalize()
    assert agreeing.uses_cam is not None and agreeing.uses_cam.tolist() == [True, True, True]
    told = acc.finalize(torch.tensor([True, False, False]))
    assert told.uses_cam is not None and told.uses_cam.tolist() == [True, False, False]
    # the two set apart share one component fitted on their pixels, oriented to the object
    assert torch.equal(told.direction[1], told.direction[2]) and float(told.direction[1, 0]) > 0.9
    assert torch.equal(told.direction[0], agreeing.direction[0])
    with pytest.raises(ValueError, match="separable must be"):
        acc.finalize(torch.tensor([True, False]))


def test_untestable_classes_draw_no_relabellings(monkeypatch: pytest.MonkeyPatch) -> None:
    import camcore.separability as module

    calls: list[int] = []
    real = module.permutation_p_value

    def counting(scores: torch.Tensor, targets: torch.Tensor, **kw: object) -> tuple[float, float]:
        calls.append(int(targets.sum()))
        return real(scores, targets, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "permutation_p_value", counting)
    targets = torch.zeros(70, 2)
    targets[:30, 0] = 1
    targets[69, 1] = 1  # one tagged image of 70: untestable
    out = module.separability(torch.rand(70, 2, generator=torch.Generator().manual_seed(0)), targets, ["a", "b"])
    assert calls == [30] and out["b"].p_value is None and out["b"].ap is not None
