"""Latency of the review grid page, the image view and the API box list at 100k images and
300k boxes in PostgreSQL, under 1 and 20 concurrent clients.

    .venv/bin/python bench/web.py [--images 100000] [--boxes-per-image 3] [--requests 200] [--workers 4] [--threads 1]
    .venv/bin/python bench/web.py --in-process [--images 100000] [--requests 300]

Creates a throwaway database on 127.0.0.1:5432 (dropped at the end), bulk-loads it with
COPY, starts gunicorn (``--workers`` processes) on 127.0.0.1 and measures with threads of
``requests`` sessions, each logged in through the real login form (pages) or with a bearer
token (API). Prints p50/p95/max per endpoint and concurrency. Goal: p95 < 150 ms at 20 clients.

``--in-process`` skips gunicorn and HTTP: one client (Flask's test client, logged in the same
way) sends the same requests one after another and the benchmark prints milliseconds per
request, wall clock and this process's CPU. On a shared machine that CPU cost is the steadier
figure, and p95 under 20 clients grows with it.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# ``web`` package: put the checkout there instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import requests  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

UrlMaker = Callable[[random.Random], str]
PG_ADMIN = os.environ.get("CAMLABEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load(url: str, data_dir: Path, n_images: int, boxes_per_image: int, seed: int = 0) -> dict[str, object]:
    """Migrate and bulk-load one collection (COPY); returns ids the benchmark requests."""
    from PIL import Image as PILImage

    from worker.store.blobs import LocalBlobStore
    from worker.store.migrate import upgrade

    upgrade(url)
    rng = random.Random(seed)
    blobs = LocalBlobStore(data_dir / "blobs")
    buf = io.BytesIO()
    PILImage.new("RGB", (64, 48), (90, 120, 30)).save(buf, format="JPEG")
    key = blobs.put_bytes(buf.getvalue(), kind="images", suffix=".jpg")
    engine = create_engine(url)
    n_categories = 10
    with engine.begin() as conn:
        cid: int = conn.execute(text("INSERT INTO collections (name, created_at) VALUES ('bench', now()) RETURNING id")).scalar_one()
        cats: list[int] = [conn.execute(text("INSERT INTO categories (collection_id, name, created_at) VALUES (:c, :n, now()) RETURNING id"),
                             {"c": cid, "n": f"class{k}"}).scalar_one() for k in range(n_categories)]
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        with cur.copy("COPY images (collection_id, sha256, rel_path, storage_key, thumb_key, width, height, status, n_boxes, created_at) FROM STDIN") as copy:
            for i in range(n_images):
                copy.write_row((cid, uuid.UUID(int=rng.getrandbits(128)).hex * 2, f"class{i % n_categories}/img{i:06d}.jpg",
                                key, key, 640, 480, "ok", 0, "2026-01-01T00:00:00Z"))
        cur.execute("SELECT min(id), max(id) FROM images WHERE collection_id = %s", (cid,))
        bounds = cur.fetchone()
        assert bounds is not None  # min/max always return one row
        first_image, last_image = bounds
        statuses = ["proposed"] * 7 + ["accepted", "rejected", "edited"]
        n_boxes = 0
        with cur.copy("COPY boxes (image_id, category_id, x1, y1, x2, y2, score, source, status, version, created_at, updated_at) FROM STDIN") as copy:
            for image_id in range(first_image, last_image + 1):
                for _ in range(rng.randint(0, 2 * boxes_per_image)):
                    x1, y1 = rng.uniform(0, 500), rng.uniform(0, 380)
                    copy.write_row((image_id, rng.choice(cats), x1, y1, x1 + rng.uniform(10, 140), y1 + rng.uniform(10, 100), round(rng.random(), 4),
                                    "cam", rng.choice(statuses), 1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"))
                    n_boxes += 1
        cur.execute("""
            UPDATE images SET n_boxes = s.n, min_score = s.lo, max_score = s.hi
            FROM (SELECT image_id, count(*) AS n, min(score) AS lo, max(score) AS hi FROM boxes
                  WHERE source <> 'ground_truth' AND status <> 'rejected' GROUP BY image_id) AS s
            WHERE images.id = s.image_id""")
        raw.commit()
        assert raw.driver_connection is not None  # open until raw.close()
        raw.driver_connection.autocommit = True
        cur.execute("VACUUM ANALYZE images")
        cur.execute("VACUUM ANALYZE boxes")
    finally:
        raw.close()
    engine.dispose()
    return {"collection_id": cid, "categories": cats, "first_image": first_image, "last_image": last_image, "n_boxes": n_boxes}


def _csrf_token(page: str) -> str:
    """The CSRF token a page carries in its ``csrf-token`` meta tag."""
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    if found is None:
        raise RuntimeError("the page has no csrf-token meta tag")
    return found.group(1)


def _login(base: str, email: str, password: str) -> requests.Session:
    session = requests.Session()
    page = session.get(base + "/login")
    token = _csrf_token(page.text)
    response = session.post(base + "/login", data={"email": email, "password": password, "csrf_token": token}, allow_redirects=False)
    assert response.status_code == 302, response.text[:300]
    return session


def url_makers(base: str, info: dict[str, Any]) -> tuple[UrlMaker, UrlMaker, UrlMaker]:
    """Random request URLs (under ``base``) of the review grid page, the image view and the API box list."""
    from web.queries import Cursor

    cid, cats = info["collection_id"], info["categories"]
    lo, hi = int(info["first_image"]), int(info["last_image"])

    def grid(rng: random.Random) -> str:
        choice = rng.random()
        if choice < 0.4:  # first page, lowest score first
            return f"{base}/review/collections/{cid}"
        if choice < 0.6:
            return f"{base}/review/collections/{cid}?status=proposed&category_id={rng.choice(cats)}"
        if choice < 0.8:  # a deep page: cursor somewhere in the score order
            return f"{base}/review/collections/{cid}?cursor={Cursor(round(rng.random(), 4), rng.randint(lo, hi)).encode()}"
        return f"{base}/review/collections/{cid}?min_score=0.2&max_score=0.4&sort=score"

    def image(rng: random.Random) -> str:
        return f"{base}/review/images/{rng.randint(lo, hi)}"

    def boxes(rng: random.Random) -> str:
        extra = "" if rng.random() < 0.5 else f"&category_id={rng.choice(cats)}&status=proposed"
        return f"{base}/api/v1/collections/{cid}/boxes?limit=100&cursor={rng.randint(0, int(info['n_boxes']))}{extra}"

    return grid, image, boxes


def measure_in_process(url: str, data_dir: Path, info: dict[str, Any], n_requests: int) -> None:
    """Each endpoint's ``n_requests`` in turn through Flask's test client; prints ms per request."""
    from web import create_app
    from web.auth import create_token, create_user

    app = create_app({"DATABASE_URL": url, "CAMLABEL_DATA_DIR": str(data_dir), "REDIS_URL": None, "SECRET_KEY": "bench-only-secret-5f0c2b9e8d7a6c4b3a2f1e0d"})
    with app.app_context():
        session = app.extensions["camlabel"].sessions()
        user = create_user(session, "bench@example.com", "bench password")
        _row, token = create_token(session, user.id)
        session.commit()
        session.close()
    pages = app.test_client()
    csrf = _csrf_token(pages.get("/login").get_data(as_text=True))
    assert pages.post("/login", data={"email": "bench@example.com", "password": "bench password", "csrf_token": csrf}).status_code == 302
    api = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    grid, image, boxes = url_makers("", info)
    print(f"\n{'endpoint (in-process)':<24}{'wall ms':>10}{'p95 ms':>10}{'CPU ms':>10}   (per request, one client, this process)")
    for label, make, client, extra in (("review grid page", grid, pages, {}), ("image view page", image, pages, {}),
                                       ("API box list", boxes, api, {"headers": headers})):
        rng = random.Random(0)
        urls = [make(rng) for _ in range(n_requests)]
        for warm in urls[:20]:
            client.get(warm, **extra)
        latencies = []
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        for one in urls:
            start = time.perf_counter()
            response = client.get(one, **extra)
            if response.status_code != 200:
                raise RuntimeError(f"{one} -> {response.status_code}: {response.get_data(as_text=True)[:200]}")
            latencies.append((time.perf_counter() - start) * 1000)
        cpu_ms = (time.process_time() - cpu_start) * 1000 / n_requests
        wall_ms = (time.perf_counter() - wall_start) * 1000 / n_requests
        latencies.sort()
        print(f"{label:<24}{wall_ms:>10.2f}{latencies[int(0.95 * (len(latencies) - 1))]:>10.2f}{cpu_ms:>10.2f}")
    print("\nCPU ms: the Flask app and test client in this process; PostgreSQL's own CPU is not included")
    app.extensions["camlabel"].dispose()


def measure(name: str, make_url: UrlMaker, sessions: list[requests.Session], concurrency: int, n_requests: int) -> dict[str, float]:
    """``n_requests`` GETs spread over ``concurrency`` threads; latency in ms."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(n_requests))

    def client(k: int) -> None:
        session = sessions[k]
        rng = random.Random(k)
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            url = make_url(rng)
            start = time.perf_counter()
            response = session.get(url)
            elapsed = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{url} -> {response.status_code}: {response.text[:200]}")
            with lock:
                latencies.append(elapsed)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    latencies.sort()
    return {"p50": statistics.median(latencies), "p95": latencies[int(0.95 * (len(latencies) - 1))], "max": latencies[-1], "n": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--boxes-per-image", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="requests per endpoint and concurrency level")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1,
                        help="gunicorn threads per worker (default 1: sync workers, as docker-compose.yml deploys)")
    parser.add_argument("--in-process", action="store_true", help="no server: ms per request through Flask's test client, one client")
    args = parser.parse_args()

    name = f"camlabel_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    server = None
    try:
        with tempfile.TemporaryDirectory(prefix="camlabel-bench-") as tmp:
            data_dir = Path(tmp) / "data"
            started = time.perf_counter()
            info = load(url, data_dir, args.images, args.boxes_per_image)
            print(f"loaded {args.images} images, {info['n_boxes']} boxes in {time.perf_counter() - started:.1f} s")
            if args.in_process:
                measure_in_process(url, data_dir, info, args.requests)
                return

            env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
            env.update(DATABASE_URL=url, CAMLABEL_DATA_DIR=str(data_dir), CAMLABEL_SECRET_KEY="bench-only-secret-5f0c2b9e8d7a6c4b3a2f1e0d")
            bin_dir = Path(sys.executable).parent
            subprocess.run([str(bin_dir / "camlabel"), "users", "create", "bench@example.com", "--password", "bench password"], env=env, check=True,
                           capture_output=True)
            token = subprocess.run([str(bin_dir / "camlabel"), "tokens", "create", "bench@example.com"], env=env, check=True,
                                   capture_output=True, text=True).stdout.strip().splitlines()[-1]
            port = _free_port()
            base = f"http://127.0.0.1:{port}"
            server = subprocess.Popen([str(bin_dir / "gunicorn"), "-w", str(args.workers), "--threads", str(args.threads), "-b", f"127.0.0.1:{port}",
                                       "--log-level", "warning", "web:create_app()"], env=env, cwd=ROOT)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get(base + "/healthz", timeout=5).status_code == 200:
                        break
                except requests.RequestException:
                    time.sleep(0.3)
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start")

            grid, image, boxes = url_makers(base, info)
            sessions = [_login(base, "bench@example.com", "bench password") for _ in range(20)]
            api_sessions = []
            for _ in range(20):
                s = requests.Session()
                s.headers["Authorization"] = f"Bearer {token}"
                api_sessions.append(s)
            for s in sessions[:2]:  # warm every worker's connection pool and template cache
                for k in range(3 * args.workers):
                    s.get(grid(random.Random(k)))
                    s.get(image(random.Random(k)))
            print(f"\n{'endpoint':<22}{'clients':>8}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}{'req/s':>9}")
            for concurrency in (1, 20):
                for label, make, pool in (("review grid page", grid, sessions), ("image view page", image, sessions), ("API box list", boxes, api_sessions)):
                    started = time.perf_counter()
                    stats = measure(label, make, pool, concurrency, args.requests)
                    rate = stats["n"] / (time.perf_counter() - started)
                    print(f"{label:<22}{concurrency:>8}{stats['p50']:>10.1f}{stats['p95']:>10.1f}{stats['max']:>10.1f}{rate:>9.1f}")
            print(f"\ngoal: p95 < 150 ms at 20 clients; server: gunicorn {args.workers} workers x {args.threads} threads on 127.0.0.1, "
                  f"{os.cpu_count()} CPUs shared with the clients")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
