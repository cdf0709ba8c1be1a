"""Real processes of the end-to-end tests: the installed ``camlabel`` CLI, ``camlabel worker``
processes, free ports, polling waits, and what a complete infer must have written."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from worker.store.models import Job

CAMLABEL = str(Path(sys.executable).with_name("camlabel"))  # the installed console script
REDIS_TEST_DB = int(os.environ.get("CAMLABEL_TEST_REDIS_DB", "7"))


class Cli:
    """Runs the installed ``camlabel`` command with a fixed environment."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([CAMLABEL, *args], env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"camlabel {' '.join(args)} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}")
        return done


class Workers:
    """Starts real ``camlabel worker`` processes; kills any left at teardown."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, queues: str = "gpu,cpu") -> subprocess.Popen[bytes]:
        with (self.logs / f"worker-{len(self.procs)}.log").open("wb") as log:
            proc = subprocess.Popen([CAMLABEL, "worker", "--queues", queues, "--loglevel", "INFO"], env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("worker-*.log")))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    """Poll ``predicate`` until truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def expected_box_counts(sessions, blobs_root: Path, model_version_id: int, box_params: dict) -> Counter[int]:  # type: ignore[no-untyped-def]
    """Boxes per image that the stored concept maps give under ``box_params`` (recomputed with
    camcore, no model pass): what one complete set of proposals must hold."""
    from sqlalchemy import select

    from camcore.boxes import BoxParams, boxes_from_maps
    from camcore.concept_maps import decode_map
    from worker.store.models import Category, ConceptMap, Image, ModelVersion

    params = BoxParams.from_dict(box_params)
    with sessions() as session:
        class_names = session.get(ModelVersion, model_version_id).class_names
        rows = session.execute(
            select(ConceptMap.image_id, Category.name, ConceptMap.raw_key, Image.width, Image.height)
            .join(Category, Category.id == ConceptMap.category_id).join(Image, Image.id == ConceptMap.image_id)
            .where(ConceptMap.model_version_id == model_version_id)
        ).all()
    maps: dict[int, dict[int, object]] = {}
    sizes: dict[int, tuple[int, int]] = {}
    for image_id, name, raw_key, width, height in rows:
        maps.setdefault(image_id, {})[class_names.index(name)] = decode_map((blobs_root / raw_key).read_bytes())
        sizes[image_id] = (width, height)
    counts: Counter[int] = Counter()
    for image_id, per_class in maps.items():
        boxes, _scores, _labels = boxes_from_maps(per_class, sizes[image_id], params)  # type: ignore[arg-type]
        counts[image_id] = int(boxes.shape[0])
    return +counts


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def job_row(sessions, job_id: int) -> Job:  # type: ignore[no-untyped-def]
    """The ``Job`` row ``job_id`` as it is now, read through the session factory ``sessions``."""
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job
