"""The evaluate job: :func:`worker.evaluation.evaluate_collection` (CorLoc@0.5, MaxBoxAccV2, AP50, AP).

Params: ``box_status`` (``all``|``accepted``|``reviewed``), optional ``model_version_id``. The metrics
(and the :class:`Evaluation` rows the evaluation adds) are committed with the job's progress.
"""

from __future__ import annotations

from typing import Any

from worker.queue.execution import JobContext, JobFailed


def run_evaluate_job(ctx: JobContext) -> dict[str, Any]:
    """Handler of ``evaluate`` jobs (see the module docstring)."""
    from worker.evaluation import evaluate_collection

    if ctx.collection_id is None:
        raise JobFailed("an evaluate job needs a collection")
    ctx.set_progress(0, 1)
    kwargs: dict[str, Any] = {"box_status": str(ctx.params.get("box_status") or "all")}
    if ctx.params.get("model_version_id") is not None:
        kwargs["model_version_id"] = int(ctx.params["model_version_id"])
    with ctx.chunk(done=1, state={}) as session:
        try:
            metrics = evaluate_collection(session, ctx.collection_id, blobs=ctx.runtime.blobs, job_id=ctx.job_id, **kwargs)
        except ValueError as exc:  # worker.formats.FormatError is a ValueError
            raise JobFailed(f"evaluation failed: {exc}") from exc
    return {"metrics": metrics}
