"""COCO export time and memory at 100k images / 300k boxes, on SQLite and PostgreSQL.

Builds a throwaway database (SQLite file; PostgreSQL database created on ``--pg-admin-url`` and
dropped afterwards) with N images and 3N accepted boxes, then runs each export in a fresh
subprocess and prints its wall time and peak-RSS growth during the export (``ru_maxrss`` after
minus before), then reruns it under ``tracemalloc`` for the peak of Python allocations. The
same export of N/10 images runs beside it: equal peaks at both sizes is what streaming
(constant memory) means. Goal: COCO of 100k images / 300k boxes in < 10 s.

Run: ``.venv/bin/python bench/export.py`` (about 2-3 minutes on 2 cores);
``--images 20000`` for a quick look, ``--formats coco,coco-results,yolo`` for more formats
(YOLO writes one label file per image: ~20 s per 100k, and minutes to delete them after).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import insert, text

from worker.store.db import make_engine, temporary_postgres_database
from worker.store.migrate import upgrade
from worker.store.models import Box, BoxSource, Category, Collection, Image, ImageStatus, ReviewStatus

CHUNK = 20_000


@contextmanager
def sqlite_database(tmp: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp / f'bench-{uuid.uuid4().hex[:6]}.db'}"


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    with temporary_postgres_database(admin_url, prefix="camlabel_bench") as url:
        yield url


def build(database_url: str, name: str, n_images: int, boxes_per_image: int, seed: int = 0) -> tuple[int, float]:
    """A collection of ``n_images`` image rows (640x480 and 480x640) with accepted CAM boxes; returns (id, seconds)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    engine = make_engine(database_url)
    with engine.begin() as connection:
        collection_id = connection.execute(insert(Collection).values(name=name).returning(Collection.id)).scalar_one()
        category_ids = [
            connection.execute(insert(Category).values(collection_id=collection_id, name=n).returning(Category.id)).scalar_one()
            for n in ("raccoon", "kangaroo", "koala")
        ]
        for start in range(0, n_images, CHUNK):
            rows = [
                {"collection_id": collection_id, "sha256": f"{collection_id:08x}{i:056x}",
                 "rel_path": f"{('raccoon', 'kangaroo', 'koala')[i % 3]}/images/img-{i:06d}.jpg",
                 "width": 640 if i % 4 else 480, "height": 480 if i % 4 else 640, "status": ImageStatus.ok, "n_boxes": boxes_per_image}
                for i in range(start, min(n_images, start + CHUNK))
            ]
            connection.execute(insert(Image), rows)
        first_image: int = connection.execute(text("SELECT min(id) FROM images WHERE collection_id = :c"), {"c": collection_id}).scalar_one()
        box_rows = []
        for i in range(n_images):
            w, h = (640, 480) if i % 4 else (480, 640)
            for _ in range(boxes_per_image):
                x1, y1 = rng.uniform(0, w * 0.6), rng.uniform(0, h * 0.6)
                box_rows.append({"image_id": first_image + i, "category_id": category_ids[i % 3],
                                 "x1": x1, "y1": y1, "x2": x1 + rng.uniform(10, w * 0.4), "y2": y1 + rng.uniform(10, h * 0.4),
                                 "score": rng.random(), "source": BoxSource.cam, "status": ReviewStatus.accepted, "version": 1})
            if len(box_rows) >= CHUNK:
                connection.execute(insert(Box), box_rows)
                box_rows.clear()
        if box_rows:
            connection.execute(insert(Box), box_rows)
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
    engine.dispose()
    return collection_id, time.perf_counter() - started


def child(database_url: str, collection_id: int, fmt: str, out: str, mode: str) -> None:
    """Run one export in this process and print ``{"seconds", "rss_growth_mib", "py_peak_mib", ...}``.

    ``mode="time"``: plain run (wall time, growth of peak RSS during the export);
    ``mode="memory"``: under ``tracemalloc`` (slower), for the peak of Python allocations.
    """
    import tracemalloc

    from worker.formats import export_collection
    from worker.store.blobs import LocalBlobStore
    from worker.store.db import make_session_factory

    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    blobs = LocalBlobStore(Path(out).parent / "blobs")
    with engine.connect() as connection:  # warm up the connection and the imports
        connection.execute(text("SELECT 1"))
    if mode == "memory":
        tracemalloc.start()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with sessions() as session:
        summary = export_collection(session, blobs, collection_id, fmt, out)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    py_peak = tracemalloc.get_traced_memory()[1] if mode == "memory" else 0
    size = Path(out).stat().st_size if Path(out).is_file() else sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    print(json.dumps({"seconds": seconds, "rss_before_mib": before / 1024, "rss_growth_mib": (after - before) / 1024, "py_peak_mib": py_peak / 2**20,
                      "images": summary.get("images", 0), "annotations": summary["annotations"], "bytes": size}))


def run_child(database_url: str, collection_id: int, fmt: str, tmp: Path, mode: str = "time") -> dict:
    out = tmp / f"export-{uuid.uuid4().hex[:6]}{'.json' if fmt.startswith('coco') else ''}"
    proc = subprocess.run([sys.executable, __file__, "--child", database_url, str(collection_id), fmt, str(out), mode],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"export child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--boxes-per-image", type=int, default=3)
    parser.add_argument("--formats", default="coco,coco-results")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--pg-admin-url", default=os.environ.get("CAMLABEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    small = max(1, args.images // 10)
    formats = [f for f in args.formats.split(",") if f]
    print(f"export bench: {args.images} images / {args.images * args.boxes_per_image} boxes, "
          f"beside {small} / {small * args.boxes_per_image}; python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory(prefix="camlabel-export-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for db in args.databases.split(","):
            ctx = sqlite_database(tmp) if db == "sqlite" else postgres_database(args.pg_admin_url)
            with ctx as url:
                upgrade(url)
                big, t_big = build(url, "big", args.images, args.boxes_per_image)
                little, _t = build(url, "small", small, args.boxes_per_image, seed=1)
                print(f"[{db}] built {args.images} images + {args.images * args.boxes_per_image} boxes in {t_big:.1f} s")
                for fmt in formats:
                    r_big = run_child(url, big, fmt, tmp)
                    m_small = run_child(url, little, fmt, tmp, "memory")
                    m_big = run_child(url, big, fmt, tmp, "memory")
                    goal = " (goal < 10 s: " + ("met" if r_big["seconds"] < 10 else "MISSED") + ")" if fmt == "coco" else ""
                    print(
                        f"[{db}] {fmt:13s} {r_big['images']:>7} images {r_big['annotations']:>7} annotations: {r_big['seconds']:6.2f} s"
                        f" ({r_big['annotations'] / r_big['seconds']:,.0f} boxes/s, {r_big['bytes'] / 2**20:.1f} MiB written,"
                        f" peak RSS +{r_big['rss_growth_mib']:.1f} MiB over {r_big['rss_before_mib']:.0f} MiB){goal}"
                    )
                    print(
                        f"[{db}] {fmt:13s} peak Python allocations (tracemalloc): {m_big['py_peak_mib']:.2f} MiB at {args.images} images"
                        f" vs {m_small['py_peak_mib']:.2f} MiB at {small} (x{m_big['py_peak_mib'] / max(m_small['py_peak_mib'], 1e-3):.2f} for x10 data)"
                    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
    else:
        main()
