"""Fixtures of the end-to-end tests.

Real worker processes: ``queue_env`` (a Redis + PostgreSQL deployment with short leases and tiny
chunks), ``cli`` (the installed ``camlabel``), ``workers`` (``camlabel worker`` processes),
``db_sessions``. The browser: ``server`` (a ``camlabel run`` server per test module, SQLite),
``browser`` (Debian's Chromium through Playwright) and ``page`` (logged in).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import ARTIFACTS, CHROMIUM, EMAIL, PASSWORD, ROOT, Server, camlabel
from tests.e2e.processes import CAMLABEL, REDIS_TEST_DB, Cli, Workers, free_port


@pytest.fixture
def redis_db_url(redis_url: str) -> Iterator[str]:
    """A spare Redis database number, flushed before and after the test."""
    import redis

    url = f"{redis_url.rstrip('/')}/{REDIS_TEST_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def queue_env(pg_url: str, redis_db_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment of a Redis + PostgreSQL deployment with short leases and tiny chunks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMLABEL_")}
    env.update(
        DATABASE_URL=pg_url, REDIS_URL=redis_db_url, CAMLABEL_DATA_DIR=str(tmp_path / "data"), CAMLABEL_JOB_LEASE_S="4",
        CAMLABEL_CHUNK_SIZE="2", CAMLABEL_DEVICE="cpu", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
    )
    return env


@pytest.fixture
def cli(queue_env: dict[str, str], tmp_path: Path) -> Cli:
    runner = Cli(queue_env, tmp_path)
    runner("db", "upgrade")
    return runner


@pytest.fixture
def db_sessions(queue_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Sessions on the test's PostgreSQL database (for checking what workers wrote)."""
    from worker.store.db import make_engine, make_session_factory

    engine = make_engine(queue_env["DATABASE_URL"])
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def workers(queue_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "logs"
    logs.mkdir()
    pool = Workers(queue_env, logs)
    yield pool
    pool.stop_all()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian chromium is required at {CHROMIUM}")
    from worker.store.migrate import upgrade

    data_dir = tmp_path_factory.mktemp("server") / "data"
    database_url = f"sqlite:///{data_dir / 'camlabel.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(CAMLABEL_DATA_DIR=str(data_dir), DATABASE_URL=database_url, PYTHONUNBUFFERED="1", CAMLABEL_QUEUE_INFER="gpu")
    data_dir.mkdir(parents=True)
    upgrade(database_url)
    camlabel(env, "users", "create", EMAIL, "--password", PASSWORD, "--admin")
    port = free_port()
    log = open(data_dir / "server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen([CAMLABEL, "run", "--port", str(port)], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import requests

    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            log.close()
            pytest.fail("server did not start:\n" + (data_dir / "server.log").read_text()[-3000:])
        time.sleep(0.2)
    yield Server(url=url, env=env, database_url=database_url, data_dir=data_dir, process=process)
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(data_dir / "server.log", ARTIFACTS / "server.log")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(server: Server, browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 950}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.camlabel_errors = errors  # reported by _wait_saved
    page.goto(server.url + "/")
    assert "/login" in page.url
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(server.url + "/")
    yield page
    context.close()
    assert not [e for e in errors if "Content Security Policy" in e or "Uncaught" in e], errors
