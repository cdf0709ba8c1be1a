"""Infer-job throughput end to end vs the camcore pipeline alone, on the same images in one run.

End to end = an ``infer`` job submitted through the queue to a real ``camlabel worker`` process
(Redis + PostgreSQL when reachable, else the embedded worker on SQLite), which reads the images
from blob storage, runs the model, writes maps (float16 ``.npy``), boxes and progress per
chunk; timed from ``submit`` until the job row says ``succeeded``. Pipeline alone = the same
model (``camcore.localizer.Localizer``: parallel decoding, forward + CAM, boxes, the float16 map
bytes of each map) over the same image files, in this process. The worker is warmed
first (one small job) so both sides have the model loaded.

    .venv/bin/python bench/jobs.py [--images 96] [--model imagenet] [--chunk 64]

Prints images/s of both and the overhead ratio (goal: <= 15 %), by wall clock and, as the machine
may be shared, by CPU seconds (worker process vs this process).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from camcore.allocator import keep_freed_memory
from worker.store.models import Job

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "raccoon-kangaroo"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _copy_images(dest: Path, n: int) -> list[Path]:
    photos = sorted((DATASET / "raccoon" / "images").glob("*.jpg")) + sorted((DATASET / "kangaroo" / "images").glob("*.jpg"))
    photos = [p for p in photos if p.name != "00090.jpg"]
    # alternate classes so any n is balanced
    half = len(photos) // 2
    mixed = [p for pair in zip(photos[:half], photos[half:], strict=False) for p in pair][:n]
    out = []
    for photo in mixed:
        target = dest / photo.parent.parent.name / "images" / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(photo, target)
        out.append(target)
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait(sessions: sessionmaker[Session], job_id: int, timeout: float = 3600) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None, f"job {job_id} vanished"
            if job.status.finished:
                return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not finish")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="images from the shared dev collection (max 363)")
    parser.add_argument("--model", default="imagenet", help="'imagenet' (built-in EfficientNet-Lite0) or 'tiny' (trained tiny_cnn)")
    parser.add_argument("--chunk", type=int, default=64, help="images per chunk (CAMLABEL_CHUNK_SIZE)")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs of each side (best is reported)")
    parser.add_argument("--embedded", action="store_true", help="force the embedded worker on SQLite")
    args = parser.parse_args()
    keep_freed_memory()  # the camcore-alone side runs as the worker process does (camcore.allocator)

    os.environ["CAMLABEL_CHUNK_SIZE"] = str(args.chunk)
    os.environ.setdefault("CAMLABEL_DEVICE", "cpu")
    tmp = Path(tempfile.mkdtemp(prefix="camlabel-bench-jobs-"))
    use_services = not args.embedded and _reachable(5432) and _reachable(6379)
    db_name = None
    worker_proc = None
    admin = None
    try:
        from sqlalchemy import create_engine, text

        if use_services:
            db_name = f"camlabel_bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{db_name}"'))
            database_url = PG_ADMIN.rsplit("/", 1)[0] + f"/{db_name}"
            redis_url = "redis://127.0.0.1:6379/9"
            import redis

            redis.Redis.from_url(redis_url).flushdb()
        else:
            database_url = f"sqlite:///{tmp / 'bench.db'}"
            redis_url = None
        os.environ["DATABASE_URL"] = database_url
        os.environ["CAMLABEL_DATA_DIR"] = str(tmp / "data")
        if redis_url:
            os.environ["REDIS_URL"] = redis_url
        else:
            os.environ.pop("REDIS_URL", None)

        from worker.config import Settings
        from worker.queue.execution import execute
        from worker.queue.submit import submit
        from worker.runtime import configure
        from worker.store.migrate import upgrade
        from worker.store.models import Collection, Image, ImageStatus, JobStatus

        upgrade(database_url)
        runtime = configure(Settings.from_env())
        _copy_images(tmp / "photos", args.images)
        _copy_images(tmp / "warm", 4)
        with runtime.sessions() as session:
            main_c, warm_c = Collection(name="bench"), Collection(name="warm")
            session.add_all([main_c, warm_c])
            session.commit()
            ids = (main_c.id, warm_c.id)
            for cid, path in ((ids[0], tmp / "photos"), (ids[1], tmp / "warm")):
                job = submit(session, kind="import", collection_id=cid, params={"path": str(path)}, inline=True)
                assert execute(job.id) == "succeeded"
        model = "imagenet"
        if args.model == "tiny":
            with runtime.sessions() as session:
                job = submit(session, kind="train", collection_id=ids[0], params={"arch": "tiny_cnn", "input_size": 224, "epochs": 30}, inline=True)
            assert execute(job.id) == "succeeded"
            with runtime.sessions() as session:
                trained = session.get(Job, job.id)
                assert trained is not None and trained.result is not None
                model = trained.result["model_version_id"]
        with runtime.sessions() as session:
            keys = [runtime.blobs.local_path(k) for k in session.query(Image.storage_key).filter(
                Image.collection_id == ids[0], Image.status == ImageStatus.ok).order_by(Image.id).all() for k in k]

        if use_services:
            log = (tmp / "worker.log").open("wb")
            worker_proc = subprocess.Popen([str(Path(sys.executable).with_name("camlabel")), "worker", "--loglevel", "WARNING"],
                                           stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        mode = "Redis + PostgreSQL, camlabel worker process" if use_services else "embedded worker thread, SQLite"
        print(f"{len(keys)} images, model {args.model}, chunk {args.chunk}, {mode}, torch threads {__import__('torch').get_num_threads()}")

        # warm the worker: model loaded and cached, first-call costs paid
        with runtime.sessions() as session:
            job = submit(session, kind="infer", collection_id=ids[1], params={"model_version_id": model})
            warmed = _wait(runtime.sessions, job.id)
        assert warmed.status is JobStatus.succeeded, warmed.error

        # camcore pipeline alone, same model and images: decode (parallel, reduced-scale JPEG
        # decoding as the job does), forward + CAM, boxes, and the float16 map bytes the job stores
        from camcore.boxes import BoxParams
        from camcore.concept_maps import encode_map
        from camcore.localizer import Localizer
        from worker.models_cache import load_model
        from worker.store.models import ModelVersion

        assert warmed.result is not None
        with runtime.sessions() as session:
            version = session.get(ModelVersion, int(warmed.result["model_version_id"]))
            assert version is not None
            session.expunge(version)
        net, spec = load_model(version, runtime.blobs, "cpu")
        localizer = Localizer(net, spec, device="cpu", params=BoxParams())

        def pipeline_alone() -> tuple[float, float]:
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(keys), args.chunk):
                images = localizer.load_images(keys[i : i + args.chunk])
                for r in localizer.localize(images, None, top_k=1):  # type: ignore[arg-type]  # the bench's photos all decode
                    for m in r.maps.values():
                        encode_map(m)
            return time.perf_counter() - start, time.process_time() - cpu

        def job_end_to_end() -> tuple[float, float]:
            start, cpu = time.perf_counter(), _cpu_seconds(worker_proc.pid) if worker_proc else float("nan")
            with runtime.sessions() as session:
                job = submit(session, kind="infer", collection_id=ids[0], params={"model_version_id": model})
            done = _wait(runtime.sessions, job.id)
            assert done.status is JobStatus.succeeded, done.error
            end = time.perf_counter()
            return end - start, (_cpu_seconds(worker_proc.pid) - cpu) if worker_proc else float("nan")

        runs_alone, runs_e2e = [], []
        for _ in range(args.repeat):
            runs_alone.append(pipeline_alone())
            runs_e2e.append(job_end_to_end())  # later runs replace the earlier results
        n = len(keys)
        alone, e2e = min(w for w, _ in runs_alone), min(w for w, _ in runs_e2e)
        alone_cpu, e2e_cpu = min(c for _, c in runs_alone), min(c for _, c in runs_e2e)
        print("pipeline alone : " + ", ".join(f"{w:.1f} s" for w, _ in runs_alone) + f"  -> best {n / alone:6.2f} images/s"
              f"  (CPU {alone_cpu:.1f} s)")
        print("infer job e2e  : " + ", ".join(f"{w:.1f} s" for w, _ in runs_e2e) + f"  -> best {n / e2e:6.2f} images/s"
              f"  (worker CPU {e2e_cpu:.1f} s)")
        print(f"overhead (queue + database + storage), wall clock best-of-{args.repeat}: {100 * (e2e / alone - 1):+.1f} %  (goal <= 15 %)")
        if worker_proc:
            print(f"overhead in CPU seconds (robust to other load on the machine): {100 * (e2e_cpu / alone_cpu - 1):+.1f} %")
    finally:
        if worker_proc is not None:
            worker_proc.terminate()
            worker_proc.wait(timeout=30)
        from worker.runtime import get_runtime

        with contextlib.suppress(Exception):
            get_runtime().dispose()
        if admin is not None and db_name:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
            admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
