"""What the train job says about classes boxed by the objectness alone."""

from __future__ import annotations

import torch

from camcore.objectness import ObjectnessStats
from worker.jobs.training import objectness_note, objectness_only


def _stats(uses_cam: list[bool], valid: list[bool] | None = None) -> ObjectnessStats:
    k = len(uses_cam)
    return ObjectnessStats(torch.zeros(k, 4), torch.zeros(k, 4), torch.tensor(valid or [True] * k),
                           torch.tensor(uses_cam), torch.zeros(k))


def test_the_summary_names_the_classes_boxed_by_the_objectness_alone() -> None:
    names = [f"bird{i}" for i in range(8)]
    assert objectness_note(_stats([True] * 8), names) == ""
    assert objectness_only(_stats([True] * 8), names) == []
    some = _stats([False, True, False] + [True] * 5)
    assert objectness_only(some, names) == ["bird0", "bird2"]
    note = objectness_note(some, names)
    assert note.startswith(" 2 of 8 classes are boxed by the collection's objectness alone") and note.endswith("bird0, bird2.")
    assert "point away from the objects" in note
    many = objectness_note(_stats([False] * 8), names)
    assert "8 of 8 classes" in many and many.endswith("bird0, bird1, bird2, bird3, bird4 and 3 more.")
    told_not = objectness_note(_stats([False] * 8), names, False)
    assert "does not tell the tags apart on held-out images" in told_not and "point away" not in told_not
    # a class without training images keeps its class map (there is no objectness to use)
    assert objectness_only(_stats([False, True], valid=[False, True]), names[:2]) == []
