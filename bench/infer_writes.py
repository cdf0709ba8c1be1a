"""Where the infer job's storage writes spend their time, per image and per stage.

Runs the infer job's chunk writer (``worker.jobs.inferring._write_chunk``: maps and descriptor
codes to float16 bytes, blob puts, categories, concept-map rows, box rows, progress + commit) on synthetic model
results of the product's shape (one 14x14 map per image, as EfficientNet-Lite0 at 448 px gives
with ``top_k=1``; ``--boxes`` boxes per image) against PostgreSQL when reachable (a fresh
database, dropped after), else SQLite, and a fresh blob directory. No model runs, so the figures
are the writes alone. Each chunk is written twice: first to fresh images (new blobs, new rows),
then again (a re-run: same blobs, rows replaced).

    .venv/bin/python bench/infer_writes.py [--images 512] [--chunk 64] [--boxes 2] [--codes 16] [--sqlite]

Prints wall milliseconds per image for each stage, both passes, the CPU milliseconds per image of
this process (the writer's own host work; PostgreSQL's is not counted), and for reference what rendering and
storing a 96 px heatmap PNG per map would add (the review pages paint heatmaps from the raw maps,
so the job does not).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from worker.store.db import temporary_postgres_database

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
STAGES = ("encode", "blob_puts", "categories", "map_rows", "box_rows", "commit")


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _results(ids: list[int], boxes_per_image: int, generator: torch.Generator, codes: int = 16) -> dict[int, Any]:
    """Model results shaped as ``camcore.localizer.Localizer`` gives them: per image a 14x14 map of class
    ``i % 2``, ``boxes_per_image`` boxes of that class on a 640x480 image, and ``codes`` x 14 x 14
    float16 descriptor codes (``None`` for 0)."""
    results = {}
    for image_id in ids:
        cls = image_id % 2
        xy = torch.rand(boxes_per_image, 2, generator=generator) * 300
        boxes = torch.cat([xy, xy + 20 + torch.rand(boxes_per_image, 2, generator=generator) * 300], dim=1)
        results[image_id] = SimpleNamespace(
            image_size=(640, 480), maps={cls: torch.randn(14, 14, generator=generator)}, boxes=boxes,
            scores=torch.rand(boxes_per_image, generator=generator), labels=torch.full((boxes_per_image,), cls, dtype=torch.long),
            codes=torch.randn(codes, 14, 14, generator=generator).half() if codes else None)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=64, help="images per chunk (CAMLABEL_CHUNK_SIZE)")
    parser.add_argument("--boxes", type=int, default=2, help="proposed boxes per image")
    parser.add_argument("--sqlite", action="store_true", help="SQLite even when PostgreSQL is reachable")
    parser.add_argument("--codes", type=int, default=16, help="descriptor code dimensions per image (0: none, as models without a basis)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    use_pg = not args.sqlite and _reachable(5432)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="camlabel-bench-writes-")))
        sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
        database_url = stack.enter_context(temporary_postgres_database(PG_ADMIN, prefix="camlabel_bench")) if use_pg else sqlite_url
        os.environ["DATABASE_URL"] = database_url
        os.environ["CAMLABEL_DATA_DIR"] = str(tmp / "data")

        from camcore.concept_maps import overlay_size, render_heatmap_png
        from worker.config import Settings
        from worker.jobs.inferring import _Computed, _write_chunk
        from worker.queue.context import JobContext
        from worker.runtime import configure
        from worker.store.bulk import insert_images
        from worker.store.migrate import upgrade
        from worker.store.models import Collection, Job, JobKind, JobStatus, ModelVersion

        upgrade(database_url)
        runtime = configure(Settings.from_env())
        stack.callback(runtime.dispose)
        with runtime.sessions() as session:
            collection = Collection(name="bench")
            session.add(collection)
            session.flush()
            version = ModelVersion(name="bench", arch="efficientnet_lite0", spec={}, class_names=["raccoon", "kangaroo"],
                                   collection_id=collection.id)
            job = Job(collection_id=collection.id, kind=JobKind.infer, status=JobStatus.running, worker_id="bench", params={})
            session.add_all([version, job])
            session.flush()
            ids = insert_images(session, [{"collection_id": collection.id, "sha256": f"{i:064x}", "rel_path": f"img/{i}.jpg",
                                           "width": 640, "height": 480} for i in range(args.images)])
            session.commit()
            collection_id, version_id, job_id = collection.id, version.id, job.id
        ctx = JobContext(runtime=runtime, job_id=job_id, kind=JobKind.infer, collection_id=collection_id, params={}, worker_id="bench",
                         device="cpu", chunk_size=args.chunk, done=0, total=len(ids))
        generator = torch.Generator().manual_seed(0)
        chunks = [ids[i:i + args.chunk] for i in range(0, len(ids), args.chunk)]
        results = {i: _results(chunk, args.boxes, generator, args.codes) for i, chunk in enumerate(chunks)}
        where = "PostgreSQL" if use_pg else "SQLite"
        print(f"{len(ids)} images, chunks of {args.chunk}, 1 map (14x14) and {args.boxes} boxes per image, {where}, blobs on {tmp}")
        for label in ("first write", "re-run"):
            timings: dict[str, float] = {}
            cpu_start = time.process_time()
            start = time.perf_counter()
            done = 0
            for i, chunk in enumerate(chunks):
                done += len(chunk)
                _write_chunk(ctx, version_id, ["raccoon", "kangaroo"], _Computed(ids=chunk, results=results[i], failed=[]), done,
                             chunk[-1], timings)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            per_stage = "  ".join(f"{stage}={timings.get(stage, 0.0) * 1e3 / len(ids):.3f}" for stage in STAGES)
            print(f"{label:12s} ms/image: total={wall * 1e3 / len(ids):.3f}  {per_stage}  (this process's CPU {cpu * 1e3 / len(ids):.3f})")
        start = time.perf_counter()
        for i in range(len(chunks)):
            for result in results[i].values():
                for cam in result.maps.values():
                    runtime.blobs.put_bytes(render_heatmap_png(cam, overlay_size(result.image_size), opacity=1.0), kind="overlays",
                                            suffix=".png")
        print(f"for reference, a 96 px heatmap PNG per map (render + put): {(time.perf_counter() - start) * 1e3 / len(ids):.3f} ms/image")


if __name__ == "__main__":
    main()
