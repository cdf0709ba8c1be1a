"""How a job's progress reads on the dashboard (``static/js/jobs.js`` writes the same text)."""

from __future__ import annotations

from worker.store.models import Job, JobStatus


def job_count(job: Job) -> str:
    """``"8/16"``; ``"cancelled at 8/16"`` for a cancelled job (how far it got); ``"8"`` while the
    total is not known yet, ``"waiting"`` for a queued job."""
    status = JobStatus(job.status)
    done = job.done or 0
    progress = f"{done}/{job.total}" if job.total is not None else str(done)
    if status == JobStatus.cancelled:
        return f"cancelled at {progress}"
    if status == JobStatus.queued and not done:
        return "waiting"
    return progress
