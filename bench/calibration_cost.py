"""What the calibrate job's camcore work costs: the fit on 20 reviewed images, then re-proposing every image.

Takes the stored maps and descriptor codes of the collections ``bench/quality.py`` has cached (the
newest results file of each collection folder), draws 20 images (seed 0) whose top boxes stand for
the reviewed boxes (the cost does not depend on which boxes are reviewed), and times
:func:`camcore.calibration.calibrate` (rules, corrections, the review map with its cross-fitting,
the box scorer and the proposal agreement) and :func:`camcore.calibration.apply` over every image,
in this process with torch's default threads, as the calibrate job runs them.

    .venv/bin/python bench/quality.py                     # fills the cache first
    .venv/bin/python bench/calibration_cost.py [--cache DIR] [--collection NAME]

Prints per collection the seconds of the fit and the milliseconds per image of re-proposing.
Compare two builds side by side with ``farm-bench`` (``--vs``) running this script in each checkout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cached_results import newest_results, no_results_message, top_boxes_as_reviewed  # noqa: E402
from bench.quality import DEFAULT_CACHE  # noqa: E402
from camcore.boxes import BoxParams  # noqa: E402
from camcore.calibration import apply, calibrate  # noqa: E402
from camcore.localizer import ImageResult  # noqa: E402


def time_collection(results: list[ImageResult]) -> tuple[float, float, int]:
    """(seconds to calibrate, ms per image to apply, reviewed images) over ``results``."""
    reviewed = top_boxes_as_reviewed(results)
    sizes = {k: r.image_size for k, r in enumerate(results)}
    codes = {k: r.codes for k, r in enumerate(results) if r.codes is not None}
    maps = {k: r.maps for k, r in enumerate(results)}
    start = time.perf_counter()
    fitted = calibrate({k: maps[k] for k in reviewed}, sizes, reviewed, BoxParams(), codes_by_image=codes)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    apply(maps, sizes, fitted, codes_by_image=codes)
    apply_s = time.perf_counter() - start
    return fit_s, 1000 * apply_s / len(results), len(reviewed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="bench/quality.py's cache folder")
    parser.add_argument("--collection", help="only this collection folder's prefix (e.g. aquarium)")
    args = parser.parse_args(argv)
    collections = newest_results(args.cache, args.collection)
    for name, results in collections:
        fit_s, apply_ms, reviewed = time_collection(results)
        print(f"{name}: calibrate {fit_s:.2f} s ({reviewed} reviewed), apply {apply_ms:.2f} ms/image over {len(results)} images")
    if not collections:
        print(no_results_message(args.cache), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
