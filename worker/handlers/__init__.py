"""Job handlers by kind: each is ``handler(ctx: JobContext) -> dict | None`` (the job's result).

``calibrate`` is resolved lazily from ``worker.jobs.calibrating.run_calibrate_job`` so the quality
area can add it without touching this registry.
"""

from __future__ import annotations

import importlib

from worker.store.models import JobKind

_HANDLERS: dict[JobKind, tuple[str, str]] = {
    JobKind.import_: ("worker.jobs.importing", "run_import_job"),
    JobKind.train: ("worker.jobs.training", "run_train_job"),
    JobKind.infer: ("worker.handlers.inference", "run_infer_job"),
    JobKind.export: ("worker.jobs.exporting", "run_export_job"),
    JobKind.evaluate: ("worker.jobs.evaluating", "run_evaluate_job"),
    JobKind.calibrate: ("worker.jobs.calibrating", "run_calibrate_job"),
}


def handler_for(kind: JobKind | str):  # type: ignore[no-untyped-def]
    """The handler function of ``kind``; ``LookupError`` with a clear message when not installed."""
    kind = JobKind(kind)
    module_name, func_name = _HANDLERS[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise LookupError(f"no handler for {kind.value} jobs is installed ({module_name} is missing)") from exc
        raise
    try:
        return getattr(module, func_name)
    except AttributeError as exc:
        raise LookupError(f"no handler for {kind.value} jobs: {module_name}.{func_name} is missing") from exc
