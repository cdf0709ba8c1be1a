"""The export job: :func:`worker.formats.export_collection` into the blob store (kind ``exports``).

Params: ``format`` (``coco|coco-results|yolo|voc``), ``status`` (``accepted|all``), optional
``source``, ``model_version_id``, ``include_unreviewed`` (default false: reviewed images only),
and for YOLO/VOC ``val_fraction`` and ``seed`` (a seeded train/val split). YOLO/VOC exports are
written as a .zip. The job's result holds the summary and ``export_key`` (download it with
``blobs.open(key)``), ``filename`` the download name ``<collection>-<format>-<YYYYMMDD>.<ext>``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from worker.execution import JobContext, JobFailed
from worker.formats.export import SUFFIXES


def run_export_job(ctx: JobContext) -> dict[str, Any]:
    """Handler of ``export`` jobs (see the module docstring)."""
    from worker.formats import download_name, export_collection
    from worker.store.models import Collection

    if ctx.collection_id is None:
        raise JobFailed("an export job needs a collection")
    fmt = str(ctx.params.get("format") or "coco")
    if fmt not in SUFFIXES:
        raise JobFailed(f"unknown export format {fmt!r}; expected one of {sorted(SUFFIXES)}")
    status = str(ctx.params.get("status") or "accepted")
    ctx.set_progress(0, 1)
    scratch = ctx.runtime.settings.data_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        out = Path(tmp) / f"export{SUFFIXES[fmt]}"
        kwargs: dict[str, Any] = {"status": status}
        for name in ("source", "model_version_id", "include_unreviewed", "val_fraction", "seed"):
            if ctx.params.get(name) is not None:
                kwargs[name] = ctx.params[name]
        with ctx.session() as session:
            collection = session.get(Collection, ctx.collection_id)
            filename = download_name(collection.name if collection else f"collection-{ctx.collection_id}", fmt)
            try:
                summary = export_collection(session, ctx.runtime.blobs, ctx.collection_id, fmt, out, **kwargs)
            except ValueError as exc:  # worker.formats.FormatError is a ValueError
                raise JobFailed(f"export failed: {exc}") from exc
        key = ctx.runtime.blobs.put_file(out, kind="exports", suffix=SUFFIXES[fmt])
    summary.pop("path", None)
    with ctx.chunk(done=1, state={}):
        pass
    return {**summary, "export_key": key, "filename": filename}
