"""The upload staging folder: where a web upload waits, one folder per upload, for its import job.

``<data_dir>/staging/<id>/`` holds an upload's files (:func:`new_staging_folder`); its import job
has param ``staging`` naming the folder and deletes it when the job ends
(:mod:`worker.jobs.importing`); cancelling a queued import deletes it
(:func:`worker.queue.submit.request_cancel`); :func:`sweep_staging` removes folders left behind
otherwise (a job cancelled after its worker died, an upload whose job was never recorded).
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.store.models import Job, JobKind, JobStatus

log = logging.getLogger(__name__)

STAGING_DIR = "staging"
#: :func:`sweep_staging` leaves younger folders alone: their upload may still be on its way to a job.
STAGING_MIN_AGE_S = 3600.0


def new_staging_folder(data_dir: Path | str) -> Path:
    """A new, empty folder under :func:`staging_root` for one upload."""
    folder = staging_root(data_dir) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def staging_root(data_dir: Path | str) -> Path:
    """``<data_dir>/staging``: where the web stages uploads, one folder per upload."""
    return Path(data_dir) / STAGING_DIR


def remove_staging(data_dir: Path | str, folder: Path | str) -> bool:
    """Delete one upload's staging folder; True if it was there.

    Only a direct child of :func:`staging_root` is ever deleted: anything else (a job whose
    params name another path) is logged and left alone."""
    root = staging_root(data_dir).resolve()
    path = Path(folder).resolve()
    if path.parent != root:
        log.warning("not removing %s: not a staging folder under %s", path, root)
        return False
    existed = path.exists()
    shutil.rmtree(path, ignore_errors=True)
    return existed


def sweep_staging(session: Session, data_dir: Path | str, *, min_age_s: float = STAGING_MIN_AGE_S) -> list[Path]:
    """Remove staging folders older than ``min_age_s`` seconds that no queued or running import
    job reads (left by a job cancelled after its worker died, or an upload whose job was never
    recorded); returns the folders removed."""
    root = staging_root(data_dir)
    if not root.is_dir():
        return []
    now = time.time()
    old = [p for p in root.iterdir() if p.is_dir() and now - p.stat().st_mtime > min_age_s]
    if not old:
        return []
    params: Iterable[dict[str, Any] | None] = session.scalars(
        select(Job.params).where(Job.kind == JobKind.import_, Job.status.in_((JobStatus.queued, JobStatus.running))))
    in_use = {Path(p["staging"]).resolve() for p in params if p and p.get("staging")}
    removed = [p for p in old if p.resolve() not in in_use and remove_staging(data_dir, p)]
    for path in removed:
        log.info("removed abandoned staging folder %s", path)
    return removed
