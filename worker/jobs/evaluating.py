"""The evaluate job: :func:`worker.evaluation.evaluate_collection` (CorLoc@0.5, MaxBoxAccV2, AP50, AP).

Params: :class:`worker.jobs.params.EvaluateParams`. The metrics
(and the :class:`Evaluation` rows the evaluation adds) are committed with the job's progress.
"""

from __future__ import annotations

from typing import Any

from worker.jobs.params import EvaluateParams
from worker.queue.context import JobContext, JobFailed


def run_evaluate_job(ctx: JobContext) -> dict[str, Any]:
    """Handler of ``evaluate`` jobs (see the module docstring)."""
    from worker.evaluation import evaluate_collection

    if ctx.collection_id is None:
        raise JobFailed("an evaluate job needs a collection")
    ctx.set_progress(0, 1)
    params = ctx.read_params(EvaluateParams)
    kwargs: dict[str, Any] = {"box_status": params.box_status}
    if params.model_version_id is not None:
        kwargs["model_version_id"] = params.model_version_id
    with ctx.chunk(done=1, state={}) as session:
        try:
            metrics = evaluate_collection(session, ctx.collection_id, blobs=ctx.runtime.blobs, job_id=ctx.job_id, **kwargs)
        except ValueError as exc:  # worker.formats.FormatError is a ValueError
            raise JobFailed(f"evaluation failed: {exc}") from exc
    return {"metrics": metrics}
