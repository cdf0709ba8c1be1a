"""The export job: :func:`worker.formats.export_collection` into the blob store (kind ``exports``).

Params: ``format`` (``coco|coco-results|yolo|voc``), ``status`` (``accepted|all``), optional
``source`` and ``model_version_id``. YOLO/VOC exports are written as a .zip. The job's result
holds the summary and ``export_key`` (download it with ``blobs.open(key)``), ``filename`` a
suggested download name.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from worker.execution import JobContext, JobFailed

SUFFIXES = {"coco": ".json", "coco-results": ".json", "yolo": ".zip", "voc": ".zip"}


def run_export_job(ctx: JobContext) -> dict[str, Any]:
    """Handler of ``export`` jobs (see the module docstring)."""
    from worker.formats import export_collection

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
        for name in ("source", "model_version_id"):
            if ctx.params.get(name) is not None:
                kwargs[name] = ctx.params[name]
        with ctx.session() as session:
            try:
                summary = export_collection(session, ctx.runtime.blobs, ctx.collection_id, fmt, out, **kwargs)
            except ValueError as exc:  # worker.formats.FormatError is a ValueError
                raise JobFailed(f"export failed: {exc}") from exc
        key = ctx.runtime.blobs.put_file(out, kind="exports", suffix=SUFFIXES[fmt])
    summary.pop("path", None)
    with ctx.chunk(done=1, state={}):
        pass
    return {**summary, "export_key": key, "filename": f"collection-{ctx.collection_id}-{fmt}{SUFFIXES[fmt]}"}
