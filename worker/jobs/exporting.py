"""The export job: :func:`worker.formats.export_file` into the blob store (kind ``exports``).

Params: :class:`worker.jobs.params.ExportParams` (``format``, ``status``, ``source``,
``model_version_id``, ``include_unreviewed``: default false, reviewed images only; for YOLO/VOC
``val_fraction`` and ``seed``, a seeded train/val split). YOLO/VOC exports are written as a .zip.
The job's result holds the summary and ``export_key`` (download it with ``blobs.open(key)``),
``filename`` the download name ``<collection>-<format>-<YYYYMMDD>.<ext>``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from worker.formats import export_file
from worker.jobs.params import ExportParams
from worker.queue.context import JobContext, JobFailed


def run_export_job(ctx: JobContext) -> dict[str, Any]:
    """Handler of ``export`` jobs (see the module docstring)."""
    if ctx.collection_id is None:
        raise JobFailed("an export job needs a collection")
    params = ctx.read_params(ExportParams)
    ctx.set_progress(0, 1)
    scratch = ctx.runtime.settings.data_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        with ctx.session() as session:
            try:
                written = export_file(session, ctx.runtime.blobs, ctx.collection_id, params.to_dict(), Path(tmp))
            except ValueError as exc:  # worker.formats.FormatError is a ValueError
                raise JobFailed(f"export failed: {exc}") from exc
        key = ctx.runtime.blobs.put_file(written.path, kind="exports", suffix=written.format.suffix)
    with ctx.chunk(done=1, state={}):
        pass
    return {**written.summary, "export_key": key, "filename": written.filename}
