"""The handler of each job kind: ``handler(ctx: JobContext) -> dict | None`` (the job's result)."""

from __future__ import annotations

from worker.jobs.calibrating import run_calibrate_job
from worker.jobs.evaluating import run_evaluate_job
from worker.jobs.exporting import run_export_job
from worker.jobs.importing import run_import_job
from worker.jobs.inferring import run_infer_job
from worker.jobs.training import run_train_job
from worker.queue.context import Handler
from worker.store.models import JobKind

HANDLERS: dict[JobKind, Handler] = {
    JobKind.import_: run_import_job,
    JobKind.train: run_train_job,
    JobKind.infer: run_infer_job,
    JobKind.export: run_export_job,
    JobKind.evaluate: run_evaluate_job,
    JobKind.calibrate: run_calibrate_job,
}


def handler_for(kind: JobKind | str) -> Handler:
    """The handler of job kind ``kind``."""
    return HANDLERS[JobKind(kind)]
