"""The export job: :func:`worker.formats.export_file` into the blob store (kind ``exports``).

Params: ``format`` (``worker.formats.EXPORT_FORMATS``), ``status`` (``accepted|all``), optional
``source``, ``model_version_id``, ``include_unreviewed`` (default false: reviewed images only),
and for YOLO/VOC ``val_fraction`` and ``seed`` (a seeded train/val split). YOLO/VOC exports are
written as a .zip. The job's result holds the summary and ``export_key`` (download it with
``blobs.open(key)``), ``filename`` the download name ``<collection>-<format>-<YYYYMMDD>.<ext>``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from worker.queue.context import JobContext, JobFailed
from worker.formats import FormatError, export_file, export_format


def run_export_job(ctx: JobContext) -> dict[str, Any]:
    """Handler of ``export`` jobs (see the module docstring)."""
    if ctx.collection_id is None:
        raise JobFailed("an export job needs a collection")
    try:
        fmt = export_format(str(ctx.params.get("format") or "coco"))
    except FormatError as exc:
        raise JobFailed(str(exc)) from exc
    ctx.set_progress(0, 1)
    scratch = ctx.runtime.settings.data_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        with ctx.session() as session:
            try:
                written = export_file(session, ctx.runtime.blobs, ctx.collection_id, ctx.params, Path(tmp))
            except ValueError as exc:  # worker.formats.FormatError is a ValueError
                raise JobFailed(f"export failed: {exc}") from exc
        key = ctx.runtime.blobs.put_file(written.path, kind="exports", suffix=fmt.suffix)
    with ctx.chunk(done=1, state={}):
        pass
    return {**written.summary, "export_key": key, "filename": written.filename}
