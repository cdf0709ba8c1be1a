"""Jobs on a bad day, with real processes: a train job cancelled inside its linear fit, the
embedded server killed mid-job, a database blip under ``--wait``, Redis down during an upload,
and a non-persistent Redis restarted with messages in it."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from tests.e2e.faults import RedisServer, TcpProxy, free_port
from tests.e2e.processes import CAMLABEL, Cli, Workers, job_row, wait_for
from tests.prerequisites import copy_photos
from worker.store.models import Image, Job, JobKind, JobStatus

pytestmark = [pytest.mark.slow]


@pytest.fixture
def db_sessions_for():  # type: ignore[no-untyped-def]
    """``db_sessions_for(url)``: a session factory on ``url`` (engines disposed after the test)."""
    from worker.store.db import make_engine, make_session_factory

    engines = []

    def make(url: str):  # type: ignore[no-untyped-def]
        engine = make_engine(url)
        engines.append(engine)
        return make_session_factory(engine)

    yield make
    for engine in engines:
        engine.dispose()


def _last_job(db_sessions, kind: JobKind) -> Job | None:  # type: ignore[no-untyped-def]
    with db_sessions() as session:
        job = session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id.desc())).first()
        if job is not None:
            session.expunge(job)
        return job


@pytest.mark.redis
@pytest.mark.postgres
def test_train_job_is_cancelled_inside_its_linear_fit_and_epochs_are_bounded(cli: Cli, workers: Workers, db_sessions,  # type: ignore[no-untyped-def]
                                                                            photos: Path) -> None:
    workers.start()
    cli("collections", "create", "rk")
    cli("import", "rk", str(photos))
    refused = cli("train", "rk", "--epochs", "1000000000", check=False)
    assert refused.returncode == 1 and "epochs must be between 1 and 20000" in refused.stderr
    job_id = int(cli("train", "rk", "--arch", "tiny_cnn", "--input-size", "64", "--epochs", "20000").stdout.strip().splitlines()[-1])
    # 8 images' features are done after 8 (+1) progress units: past them the job is in the Adam loop
    wait_for(lambda: (j := job_row(db_sessions, job_id)).status is JobStatus.running and j.done > 12, 180, "the train job inside its fit")
    cli("jobs", "cancel", str(job_id))
    stopped = wait_for(lambda: (j := job_row(db_sessions, job_id)).status.finished and j, 20, "the train job to stop after its cancel")
    assert stopped.status is JobStatus.cancelled and stopped.done < stopped.total  # type: ignore[union-attr]


@pytest.mark.postgres
def test_killed_embedded_server_job_ends_by_itself_after_a_restart(pg_url: str, shared_dataset: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                   db_sessions_for) -> None:
    photos = copy_photos(shared_dataset, tmp_path / "photos", 20)
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMLABEL_") and k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(DATABASE_URL=pg_url, CAMLABEL_DATA_DIR=str(data_dir), CAMLABEL_JOB_LEASE_S="6", CAMLABEL_CHUNK_SIZE="1",
               CAMLABEL_QUEUED_GRACE_S="2", CAMLABEL_DEVICE="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cli = Cli(env, tmp_path)
    cli("db", "upgrade")
    cli("users", "create", "ops@example.com", "--password", "correct horse battery", "--admin")
    token = cli("tokens", "create", "ops@example.com").stdout.strip().splitlines()[-1]
    cli("collections", "create", "rk")
    port = free_port()
    logs = tmp_path / "server.log"

    def serve() -> subprocess.Popen[bytes]:
        with logs.open("ab") as log:
            proc = subprocess.Popen([CAMLABEL, "run", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        wait_for(lambda: _healthy(port) or proc.poll() is not None, 60, "camlabel run to serve")
        assert proc.poll() is None, logs.read_text()[-3000:]
        return proc

    sessions = db_sessions_for(pg_url)
    server = serve()
    try:
        files = [("files", (p.relative_to(photos).as_posix(), p.read_bytes(), "image/jpeg")) for p in sorted(photos.rglob("*.jpg"))]
        response = requests.post(f"http://127.0.0.1:{port}/api/v1/collections/1/uploads", files=files, data={"tag": "animal"},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert response.status_code == 202, response.text
        job_id = response.json()["job"]["id"]
        wait_for(lambda: (j := job_row(sessions, job_id)).status is JobStatus.running and j.done >= 2, 120, "the import to be under way")
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        killed = job_row(sessions, job_id)
        assert killed.status is JobStatus.running and killed.done < killed.total  # type: ignore[operator]
        server = serve()
        ended = wait_for(lambda: (j := job_row(sessions, job_id)).status.finished and j, 120, "the killed job to end after the restart")
        assert ended.status is JobStatus.succeeded, (ended.error, logs.read_text()[-3000:])  # type: ignore[union-attr]
        result = ended.result  # type: ignore[union-attr]
        assert ended.attempts >= 2 and result["imported"] + result["duplicates"] == 40, result  # type: ignore[union-attr]
        with sessions() as session:  # every file once: nothing lost, nothing twice
            assert session.scalar(select(func.count()).select_from(Image)) == result["imported"] >= 38
        assert "lost its worker; re-enqueued" in logs.read_text()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.redis
@pytest.mark.postgres
def test_infer_wait_survives_a_database_blip(cli: Cli, workers: Workers, db_sessions, photos: Path) -> None:  # type: ignore[no-untyped-def]
    workers.start()
    cli("collections", "create", "rk")
    cli("import", "rk", str(photos))
    cli("train", "rk", "--arch", "tiny_cnn", "--input-size", "64", "--epochs", "20", "--wait")
    workers.stop_all()
    url = make_url(cli.env["DATABASE_URL"])
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    env = {**cli.env, "DATABASE_URL": url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)}
    waiting = subprocess.Popen([CAMLABEL, "infer", "rk", "--wait"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job = wait_for(lambda: _last_job(db_sessions, JobKind.infer), 60, "the infer job to be submitted")
        time.sleep(1.0)  # the command is polling the job now
        proxy.cut()  # the database goes away for the waiting command (the worker uses its own connection)
        workers.start()
        done = wait_for(lambda: (j := job_row(db_sessions, job.id)).status.finished and j, 180, "the infer job")  # type: ignore[union-attr]
        assert done.status is JobStatus.succeeded  # type: ignore[union-attr]
        time.sleep(2.0)
        proxy.restore()
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
        proxy.cut()
    assert waiting.returncode == 0, err
    assert "database unreachable while waiting for job" in err and "Traceback" not in err
    assert "8 images" in out


@pytest.mark.postgres
def test_lost_messages_of_a_restarted_redis_are_sent_again_within_seconds(cli: Cli, db_sessions, photos: Path,  # type: ignore[no-untyped-def]
                                                                           tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    env = {**cli.env, "REDIS_URL": redis_server.url, "CAMLABEL_QUEUED_GRACE_S": "2"}
    own = Cli(env, tmp_path)
    logs = tmp_path / "fault-logs"
    logs.mkdir()
    pool = Workers(env, logs)
    try:
        own("collections", "create", "rk")
        import_id = int(own("import", "rk", str(photos), "--no-wait").stdout.strip().splitlines()[-1])
        redis_server.kill()  # no persistence: the import's message is gone
        redis_server.start()
        held_id = int(own("train", "rk", "--arch", "tiny_cnn").stdout.strip().splitlines()[-1])  # sits in the gpu queue
        held_task = job_row(db_sessions, held_id).celery_task_id
        pool.start(queues="cpu")
        done = wait_for(lambda: (j := job_row(db_sessions, import_id)).status.finished and j, 90, "the import whose message was lost")
        assert done.status is JobStatus.succeeded and done.result["imported"] == 8  # type: ignore[union-attr]
        assert "had no message in the broker; sent it again" in pool.log_text()
        time.sleep(3)  # more watchdog passes: a job whose message the broker holds is never re-sent
        held = job_row(db_sessions, held_id)
        assert held.status is JobStatus.queued and held.celery_task_id == held_task
    finally:
        pool.stop_all()
        redis_server.kill()


@pytest.mark.postgres
def test_redis_down_during_an_upload_keeps_the_job_queued_and_it_runs_when_redis_is_back(pg_url: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                                        db_sessions_for) -> None:
    from PIL import Image as PILImage

    from tests.web.helpers import Factory, login
    from web import create_app
    from worker.store.migrate import upgrade

    redis_server = RedisServer(tmp_path / "redis")  # not started: Redis is down
    upgrade(pg_url)
    data_dir = tmp_path / "data"
    app = create_app({"DATABASE_URL": pg_url, "CAMLABEL_DATA_DIR": str(data_dir), "REDIS_URL": redis_server.url,
                      "SECRET_KEY": "test-only-5e1f0a9c3b7d2e4f6a8c0b1d3e5f7a9c"})
    factory = Factory(app)
    factory.user("ops@example.com")
    browser = login(app.test_client(), "ops@example.com")
    cid, _ = factory.collection("queued", categories=())
    png = io.BytesIO()
    PILImage.new("RGB", (32, 24), (200, 10, 10)).save(png, format="PNG")
    response = browser.api("POST", f"/api/v1/collections/{cid}/uploads", content_type="multipart/form-data",
                           data={"files": [(io.BytesIO(png.getvalue()), "a.png")]})
    assert response.status_code == 503, response.get_json()
    message = response.get_json()["error"]["message"]
    assert "is recorded and queued" in message and "starts automatically once the queue is back" in message
    sessions = db_sessions_for(pg_url)
    with sessions() as session:
        job = session.scalars(select(Job)).one()
        assert job.status is JobStatus.queued and "not sent to the job queue yet" in job.error
        staging = Path(job.params["staging"])
        job_id = job.id
    assert staging.is_dir()

    redis_server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMLABEL_")}
    env.update(DATABASE_URL=pg_url, REDIS_URL=redis_server.url, CAMLABEL_DATA_DIR=str(data_dir), CAMLABEL_QUEUED_GRACE_S="2",
               CAMLABEL_DEVICE="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    logs = tmp_path / "logs"
    logs.mkdir()
    pool = Workers(env, logs)
    try:
        pool.start(queues="cpu")
        done = wait_for(lambda: (j := job_row(sessions, job_id)).status.finished and j, 90, "the upload's import once Redis is back")
        assert done.status is JobStatus.succeeded and done.error is None and done.result["imported"] == 1  # type: ignore[union-attr]
        assert not staging.exists()
    finally:
        pool.stop_all()
        redis_server.kill()
        app.extensions["camlabel"].dispose()
