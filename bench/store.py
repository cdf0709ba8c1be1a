"""SQL store throughput on SQLite and PostgreSQL: bulk inserts and keyset paging at 100k images.

Prints rows/s for
  - inserting N images (``insert_images``, dedup by hash, one transaction per batch),
  - inserting 3N boxes (default 300k) with ``insert_boxes`` and, the inference path, with
    ``replace_boxes`` (delete old proposals + insert + refresh image stats),
  - the same boxes added one ORM object at a time (a sample), for the ratio,
  - paging through all N images, pages of 100: keyset by id, keyset by (min_score, id) as the
    review grid sorts, and LIMIT/OFFSET (a sample of pages at the end of the list), for the ratio.

SQLite uses a throwaway file; PostgreSQL a throwaway database created on the server of
``--pg-admin-url`` and dropped afterwards. Run: ``.venv/bin/python bench/store.py``
(about 2-4 minutes on 2 cores; ``--images 20000`` for a quick look).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import func, select, text, tuple_
from sqlalchemy.orm import Session

from worker.store.bulk import insert_boxes, insert_images, replace_boxes
from worker.store.collections_repo import get_or_create_categories
from worker.store.db import make_engine, make_session_factory, temporary_postgres_database
from worker.store.migrate import upgrade
from worker.store.models import Box, BoxSource, Collection, Image, ModelVersion, ReviewStatus

IMAGE_BATCH = 5000
BOX_IMAGE_BATCH = 2000  # images per replace_boxes call (one inference chunk)


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="camlabel-bench-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'bench.db'}"


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    with temporary_postgres_database(admin_url, prefix="camlabel_bench") as url:
        yield url


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    rows = fn()
    return rows, time.perf_counter() - start


def report(results: dict[str, tuple[int, float]], backend: str, label: str, rows: int, seconds: float) -> None:
    results[label] = (rows, seconds)
    print(f"  {backend:<10} {label:<44} {rows:>9,d} rows {seconds:8.2f} s {rows / seconds:>12,.0f} rows/s", flush=True)


def run_backend(backend: str, url: str, n_images: int, boxes_per_image: int, page_size: int, orm_sample: int) -> dict[str, tuple[int, float]]:
    results: dict[str, tuple[int, float]] = {}
    def migrate() -> int:
        upgrade(url)
        return 0

    _, seconds = timed(migrate)
    print(f"  {backend:<10} {'migrate to head':<44} {seconds:8.2f} s", flush=True)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    try:
        with sessions() as session:
            collection = Collection(name="bench")
            session.add(collection)
            session.flush()
            coll = collection.id
            cats = list(get_or_create_categories(session, coll, ["raccoon", "kangaroo"]).values())
            mv = ModelVersion(collection_id=coll, name="bench", arch="tiny", spec={}, class_names=["raccoon", "kangaroo"])
            session.add(mv)
            session.commit()
            mv_id = mv.id

        # -- images -------------------------------------------------------------------------
        def image_rows(start: int, stop: int) -> list[dict]:
            return [
                {"collection_id": coll, "sha256": hashlib.sha256(f"img-{i}".encode()).hexdigest(), "rel_path": f"photos/{i:06d}.jpg",
                 "width": 640, "height": 480}
                for i in range(start, stop)
            ]

        def load_images() -> int:
            with sessions() as session:
                for start in range(0, n_images, IMAGE_BATCH):
                    insert_images(session, image_rows(start, min(start + IMAGE_BATCH, n_images)))
                    session.commit()
            return n_images

        report(results, backend, f"insert_images ({IMAGE_BATCH}/txn)", *timed(load_images))

        def reimport() -> int:  # every row a duplicate: the dedup path
            with sessions() as session:
                for start in range(0, n_images, IMAGE_BATCH):
                    insert_images(session, image_rows(start, min(start + IMAGE_BATCH, n_images)))
                    session.commit()
            return n_images

        report(results, backend, "insert_images re-import (all duplicates)", *timed(reimport))
        with sessions() as session:
            image_ids = list(session.execute(select(Image.id).where(Image.collection_id == coll).order_by(Image.id)).scalars())
        assert len(image_ids) == n_images, "re-import must not duplicate"

        def box_rows(ids: list[int]) -> list[dict]:
            rows = []
            for image_id in ids:
                for k in range(boxes_per_image):
                    score = ((image_id * 7919 + k * 104729) % 1000) / 1000
                    rows.append({"image_id": image_id, "category_id": cats[k % 2], "x1": 10.0 + k, "y1": 20.0, "x2": 300.0, "y2": 200.0 + k, "score": score})
            return rows

        # -- boxes: raw bulk insert ---------------------------------------------------------------
        def load_boxes_raw() -> int:
            total = 0
            with sessions() as session:
                for start in range(0, n_images, BOX_IMAGE_BATCH):
                    rows = [{**row, "source": BoxSource.ground_truth, "status": ReviewStatus.accepted}
                            for row in box_rows(image_ids[start : start + BOX_IMAGE_BATCH])]
                    total += insert_boxes(session, rows, refresh_stats=False)
                    session.commit()
            return total

        report(results, backend, f"insert_boxes ({BOX_IMAGE_BATCH * boxes_per_image}/txn)", *timed(load_boxes_raw))

        # -- boxes: inference path ------------------------------------------------------------------
        def load_boxes_replace() -> int:
            total = 0
            with sessions() as session:
                for start in range(0, n_images, BOX_IMAGE_BATCH):
                    chunk = image_ids[start : start + BOX_IMAGE_BATCH]
                    total += replace_boxes(session, chunk, mv_id, box_rows(chunk))
                    session.commit()
            return total

        report(results, backend, "replace_boxes + stats, first run", *timed(load_boxes_replace))
        report(results, backend, "replace_boxes + stats, re-run (replaces)", *timed(load_boxes_replace))
        with sessions() as session:
            n_boxes = session.execute(select(func.count()).select_from(Box)).scalar_one()
        assert n_boxes == 2 * n_images * boxes_per_image, f"re-run must replace, not duplicate ({n_boxes})"

        # -- boxes: one ORM object at a time (sample), for the ratio ---------------------------------
        def load_boxes_orm() -> int:
            sample_ids = image_ids[: max(1, orm_sample // boxes_per_image)]
            rows = box_rows(sample_ids)
            with sessions() as session:
                for start in range(0, len(rows), BOX_IMAGE_BATCH * boxes_per_image):
                    for row in rows[start : start + BOX_IMAGE_BATCH * boxes_per_image]:
                        session.add(Box(**row, source=BoxSource.human, status=ReviewStatus.accepted))
                        session.flush()  # one INSERT per object, as naive per-row code does
                    session.commit()
            return len(rows)

        report(results, backend, "ORM add+flush per box (sample)", *timed(load_boxes_orm))
        with sessions() as session:
            analyze(session)

        # -- paging -----------------------------------------------------------------------------------
        def page_by_id(session: Session) -> tuple[int, list[float]]:
            seen, last, latencies = 0, 0, []
            while True:
                start = time.perf_counter()
                page = session.execute(
                    select(Image.id, Image.rel_path, Image.thumb_key, Image.n_boxes, Image.min_score)
                    .where(Image.collection_id == coll, Image.id > last)
                    .order_by(Image.id)
                    .limit(page_size)
                ).all()
                latencies.append(time.perf_counter() - start)
                if not page:
                    return seen, latencies
                seen += len(page)
                last = page[-1].id

        def page_by_score(session: Session) -> tuple[int, list[float]]:
            seen, cursor, latencies = 0, None, []
            while True:
                query = select(Image.id, Image.rel_path, Image.thumb_key, Image.n_boxes, Image.min_score).where(
                    Image.collection_id == coll, Image.min_score.is_not(None)
                )
                if cursor is not None:
                    # A row-value comparison is one index range scan on both databases (an OR of
                    # "score > s OR (score = s AND id > i)" is not, on SQLite).
                    query = query.where(tuple_(Image.min_score, Image.id) > tuple_(cursor[0], cursor[1]))
                start = time.perf_counter()
                page = session.execute(query.order_by(Image.min_score, Image.id).limit(page_size)).all()
                latencies.append(time.perf_counter() - start)
                if not page:
                    return seen, latencies
                seen += len(page)
                cursor = (page[-1].min_score, page[-1].id)

        def page_by_offset_tail(session: Session) -> tuple[int, list[float]]:
            """The last 10% of pages with OFFSET (the expensive end of an offset-paged list)."""
            seen, latencies = 0, []
            n_pages = -(-n_images // page_size)
            for page_no in range(n_pages - max(1, n_pages // 10), n_pages):
                start = time.perf_counter()
                page = session.execute(
                    select(Image.id, Image.rel_path, Image.thumb_key, Image.n_boxes, Image.min_score)
                    .where(Image.collection_id == coll)
                    .order_by(Image.id)
                    .offset(page_no * page_size)
                    .limit(page_size)
                ).all()
                latencies.append(time.perf_counter() - start)
                seen += len(page)
            return seen, latencies

        for label, pager in (
            (f"keyset paging by id (pages of {page_size})", page_by_id),
            (f"keyset paging by (min_score, id) ({page_size})", page_by_score),
            ("OFFSET paging, last 10% of pages", page_by_offset_tail),
        ):
            with sessions() as session:
                start = time.perf_counter()
                seen, latencies = pager(session)
                seconds = time.perf_counter() - start
            if label.startswith("keyset"):
                assert seen == n_images, f"{label}: saw {seen} of {n_images}"
            report(results, backend, label, seen, seconds)
            print(f"  {'':<10} {'':<44} page p50 {statistics.median(latencies) * 1e3:6.2f} ms, max {max(latencies) * 1e3:6.2f} ms")
    finally:
        engine.dispose()
    return results


def analyze(session: Session) -> None:
    """Fresh planner statistics (what autovacuum / a periodic ANALYZE would give a real server)."""
    session.execute(text("ANALYZE"))
    session.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--boxes-per-image", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--orm-sample", type=int, default=6_000, help="boxes added one ORM object at a time")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    print(f"camlabel store bench: {args.images:,} images, {args.images * args.boxes_per_image:,} boxes per box pass, pages of {args.page_size}")
    all_results: dict[str, dict[str, tuple[int, float]]] = {}
    for backend in args.backends.split(","):
        database = sqlite_database() if backend == "sqlite" else postgres_database(args.pg_admin_url)
        with database as url:
            all_results[backend] = run_backend(backend, url, args.images, args.boxes_per_image, args.page_size, args.orm_sample)

    def rate(backend: str, prefix: str) -> float:
        rows, seconds = next(v for k, v in all_results[backend].items() if k.startswith(prefix))
        return rows / seconds

    print("\nratios (higher = first is faster)")
    for backend in all_results:
        print(f"  {backend:<10} insert_boxes / ORM per-box add        {rate(backend, 'insert_boxes') / rate(backend, 'ORM'):8.1f}x")
        print(f"  {backend:<10} keyset by id / OFFSET (last 10% pages) {rate(backend, 'keyset paging by id') / rate(backend, 'OFFSET'):8.1f}x")
    if len(all_results) == 2:
        for prefix in ("insert_images (", "insert_boxes", "replace_boxes + stats, first", "keyset paging by id"):
            print(f"  postgresql / sqlite {prefix.rstrip(' (')+':':<36} {rate('postgresql', prefix) / rate('sqlite', prefix):8.2f}x")


if __name__ == "__main__":
    main()
