"""The per-image results ``bench/quality.py`` caches, for the benches that time what runs on them.

``bench/after_review_boxes.py`` and ``bench/calibration_cost.py`` read the newest results file of
each collection folder in the harness's cache, and stand the top box of 20 drawn images in for
the reviewer's boxes (what they time does not depend on which boxes are reviewed).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quality import _restored  # noqa: E402
from camcore.localizer import ImageResult  # noqa: E402

__all__ = ["Reviewed", "newest_results", "no_results_message", "top_boxes_as_reviewed"]

Reviewed = dict[int, list[tuple[int, list[float]]]]


def newest_results(cache: Path, prefix: str | None = None) -> list[tuple[str, list[ImageResult]]]:
    """Per collection folder of ``cache`` (those whose name starts with ``prefix`` when given, in
    name order): ``(folder name, its newest results file's readable images)``."""
    out = []
    for folder in sorted(p for p in cache.glob("*") if p.is_dir()):
        if prefix and not folder.name.startswith(prefix):
            continue
        files = sorted(folder.glob("results-*.pt"), key=lambda f: f.stat().st_mtime)
        if files:
            stored = torch.load(files[-1], map_location="cpu", weights_only=True)
            out.append((folder.name, [_restored(d) for d in stored if d is not None]))
    return out


def no_results_message(cache: Path) -> str:
    return f"no cached results under {cache}: run bench/quality.py first"


def top_boxes_as_reviewed(results: list[ImageResult], n: int = 20, seed: int = 0) -> Reviewed:
    """``n`` images drawn (seeded) with their top box as the reviewed box: index -> ``[(class, xyxy)]``."""
    keys = random.Random(seed).sample(range(len(results)), min(n, len(results)))
    return {k: [(int(c), b.tolist()) for b, c in zip(results[k].boxes[:1], results[k].labels[:1], strict=True)] for k in keys}
