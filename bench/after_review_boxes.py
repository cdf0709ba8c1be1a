"""What boxing one image costs after a calibration, with and without the proposal agreement.

After review, :func:`camcore.boxes.boxes_from_maps` weighs each box by the GT-free proposals of the
raw map (:mod:`camcore.boxes.agreement`), which boxes every map a second time. This bench takes
the stored maps of the collections ``bench/quality.py`` has cached (the newest results file of
each collection folder), calibrates from 20 images (their top box as the reviewed box: the timing
does not depend on which boxes are reviewed), and times ``boxes_from_maps`` over every image with
the calibrated params and with the same params less the agreement, interleaved over ``--passes``.

    .venv/bin/python bench/quality.py                     # fills the cache first
    .venv/bin/python bench/after_review_boxes.py [--cache DIR] [--passes 3]

Prints per collection the milliseconds per image without and with the agreement and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cached_results import newest_results, no_results_message, top_boxes_as_reviewed  # noqa: E402
from bench.quality import DEFAULT_CACHE  # noqa: E402
from camcore.boxes import BoxParams, boxes_from_maps  # noqa: E402
from camcore.boxes.agreement import EXTRA_KEY  # noqa: E402
from camcore.calibration import calibrate  # noqa: E402
from camcore.localizer import ImageResult  # noqa: E402


def time_collection(results: list[ImageResult], passes: int) -> tuple[float, float]:
    """(ms per image without the agreement, ms per image with it) over ``results``."""
    reviewed = top_boxes_as_reviewed(results)
    sizes = {k: r.image_size for k, r in enumerate(results)}
    params = BoxParams.from_dict(calibrate({k: results[k].maps for k in reviewed}, sizes, reviewed, BoxParams()))
    without = BoxParams.from_dict({**params.to_dict(), "extra": {k: v for k, v in params.extra.items() if k != EXTRA_KEY}})
    spent = {"with": 0.0, "without": 0.0}
    for _ in range(passes):
        for label, p in (("without", without), ("with", params)):
            start = time.perf_counter()
            for r in results:
                boxes_from_maps(r.maps, r.image_size, p)
            spent[label] += time.perf_counter() - start
    n = passes * len(results)
    return 1000 * spent["without"] / n, 1000 * spent["with"] / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="bench/quality.py's cache folder")
    parser.add_argument("--passes", type=int, default=3, help="interleaved timing passes per collection")
    args = parser.parse_args(argv)
    collections = newest_results(args.cache)
    for name, results in collections:
        without, with_agreement = time_collection(results, args.passes)
        print(f"{name}: {without:.2f} ms/image without the agreement, {with_agreement:.2f} with it "
              f"(x{with_agreement / without:.2f})")
    if not collections:
        print(no_results_message(args.cache), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
