"""Collections, jobs and the worker from the command line (the contract scripts rely on).

Commands get the runtime with :func:`worker.runtime.get_runtime` (environment:
``DATABASE_URL``, ``REDIS_URL``, ``CAMLABEL_DATA_DIR``). With ``REDIS_URL`` jobs go to the
Celery workers; without it (embedded mode) the command runs its job in-process. Errors are
printed as ``Error: ...`` with exit status 1; ``--wait`` exits 1 when the job fails or is
cancelled. While waiting, a lost database connection is retried with backoff (up to
``CAMLABEL_WAIT_DB_RETRY_S`` seconds, default 300) instead of ending the command: the job goes
on in its worker meanwhile.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select

from web.cli.failures import reported
from web.services.collections import collection_by_name, create_collection, image_counts
from web.services.errors import NotFound
from web.services.jobs import submit_job
from worker.formats import BOX_STATUSES, EXPORT_FORMATS, save_export
from worker.import_sources import ImportSourceError, list_source
from worker.jobs.params import EVALUATE_BOX_STATUSES, TRAIN_MODES
from worker.queue.app import configure_celery
from worker.queue.embedded import run_inline
from worker.queue.submit import request_cancel
from worker.queue.transient import is_transient
from worker.runtime import Runtime, get_runtime
from worker.store.models import Collection, Job, JobStatus

POLL_S = 0.5
#: Backoff between reads of a job while the database is unreachable: first and longest wait, seconds.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0
DEFAULT_WAIT_DB_RETRY_S = 300.0


def _runtime() -> Runtime:
    return get_runtime()


def _collection_id(session: Any, name: str) -> int:
    try:
        return collection_by_name(session, name).id
    except NotFound:
        raise click.ClickException(f"no collection named {name!r}; create it with: camlabel collections create {name!r}") from None


def _submit(kind: str, name: str, params: Mapping[str, Any]) -> tuple[int, bool]:
    """Create the job through the same service as the web (``web.services.jobs.submit_job``: the
    same parameter checks and error text; a ``None`` option is the parameter's default),
    without its preflight: a job that cannot run is recorded and fails with its reason, as
    scripts reading ``camlabel jobs`` expect. Returns ``(job id, inline)`` (inline: embedded
    mode, run it here)."""
    runtime = _runtime()
    inline = runtime.settings.embedded
    with runtime.sessions() as session, reported():
        collection_id = _collection_id(session, name)
        job = submit_job(session, kind=kind, collection_id=collection_id, params=params, user_id=None, inline=inline, preflight=False)
        return job.id, inline


def _read_job(job_id: int) -> Any:
    with _runtime().sessions() as session:
        job = session.get(Job, job_id)
        if job is not None:
            session.expunge(job)
        return job


def _job_row(job_id: int) -> Any:
    """Job ``job_id`` as stored now (detached), or ``None``. A lost database connection is retried
    with exponential backoff (:data:`RETRY_FIRST_S` .. :data:`RETRY_MAX_S`) for up to
    ``CAMLABEL_WAIT_DB_RETRY_S`` seconds, saying so once on stderr; then a clear error."""
    limit = float(os.environ.get("CAMLABEL_WAIT_DB_RETRY_S", DEFAULT_WAIT_DB_RETRY_S))
    deadline = time.monotonic() + limit
    delay = RETRY_FIRST_S
    warned = False
    while True:
        try:
            job = _read_job(job_id)
        except Exception as exc:  # noqa: BLE001 - only lost connections are retried, see below
            if not is_transient(exc):
                raise
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            if time.monotonic() + delay > deadline:
                raise click.ClickException(
                    f"the database is still unreachable after {limit:.0f} s while waiting for job {job_id} ({reason}); "
                    f"the job may still be running: check it later with 'camlabel jobs <collection>'") from None
            if not warned:
                click.echo(f"database unreachable while waiting for job {job_id} ({reason}); retrying", err=True)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            continue
        if warned:
            click.echo(f"database reachable again; still waiting for job {job_id}", err=True)
        return job


def _run_and_wait(job_id: int, *, inline: bool, wait: bool, quiet: bool = False) -> Any:
    """Run (inline) and/or wait for a job with a progress bar; exits 1 if it did not succeed."""
    if not quiet:
        click.echo(f"job {job_id} submitted" + (" (running in-process: no REDIS_URL)" if inline else ""), err=True)
    if not inline and not wait:
        click.echo(str(job_id))
        return None
    errors: list[BaseException] = []
    thread = None
    if inline:
        def target() -> None:
            try:
                run_inline(job_id)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        thread = threading.Thread(target=target, name=f"camlabel-job-{job_id}", daemon=True)
        thread.start()
    try:
        job = _poll(job_id, thread, show=not quiet)
    except KeyboardInterrupt:
        with _runtime().sessions() as session:
            request_cancel(session, job_id)
        raise click.ClickException(f"interrupted: cancel of job {job_id} requested (it stops at its next chunk)") from None
    if thread is not None:
        thread.join()
        job = _job_row(job_id)
    if errors:
        raise click.ClickException(f"job {job_id} could not run: {errors[0]}")
    if job.status is not JobStatus.succeeded:
        reason = f": {job.error}" if job.error else ""
        raise click.ClickException(f"job {job_id} {job.status.value}{reason}")
    if not quiet:
        click.echo(f"job {job_id} succeeded", err=True)
    return job


def _poll(job_id: int, thread: threading.Thread | None, *, show: bool) -> Any:
    bar = None
    shown = 0
    try:
        while True:
            job = _job_row(job_id)
            if job is None:
                raise click.ClickException(f"job {job_id} disappeared")
            if show and job.total and bar is None:
                bar = click.progressbar(length=job.total, label=f"{job.kind.value} job {job_id}", file=sys.stderr)
                bar.__enter__()
            if bar is not None and job.total:
                if job.total != bar.length:
                    bar.length = job.total
                step = max(0, min(job.done, job.total) - shown)
                if step:
                    bar.update(step)
                    shown += step
            if job.status.finished and (thread is None or not thread.is_alive()):
                return job
            if thread is not None and not thread.is_alive() and not job.status.finished:
                return job
            time.sleep(POLL_S)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


# -- collections ---------------------------------------------------------------------------
@click.group("collections")
def collections_group() -> None:
    """Create and list collections."""


@collections_group.command("create")
@click.argument("name")
def collections_create(name: str) -> None:
    """Create collection NAME (prints its id)."""
    with _runtime().sessions() as session, reported():
        collection = create_collection(session, name)  # the same rule as the API and the dashboard
        click.echo(f"created collection {collection.id} {collection.name}")


@collections_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def collections_list(as_json: bool) -> None:
    """List collections with their image counts."""
    with _runtime().sessions() as session:
        counts = image_counts(session)
        rows = [(i, n, counts.get(i, 0)) for i, n in session.execute(select(Collection.id, Collection.name).order_by(Collection.id)).all()]
    if as_json:
        click.echo(json.dumps([{"id": i, "name": n, "images": c} for i, n, c in rows]))
        return
    for collection_id, name, count in rows:
        click.echo(f"{collection_id}\t{name}\t{count} images")


# -- jobs that make things -----------------------------------------------------------------
@click.command("import")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--manifest", type=click.Path(path_type=Path), help="CSV with columns file_name,tags (tags separated by ';').")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the import (with Redis).")
def import_command(name: str, path: Path, manifest: Path | None, wait: bool) -> None:
    """Import images from PATH (a folder ROOT/<tag>/..., a .zip of one, or files listed in --manifest)."""
    path = path.resolve()
    try:
        listing = list_source(path, manifest.resolve() if manifest else None)
    except ImportSourceError as exc:
        raise click.ClickException(str(exc)) from exc
    if not listing.entries:
        raise click.ClickException(f"{path} holds no files to import")
    params = {"path": str(path), "manifest": str(manifest.resolve()) if manifest else None}
    job_id, inline = _submit("import", name, params)
    job = _run_and_wait(job_id, inline=inline, wait=wait)
    if job is not None:
        r = job.result or {}
        click.echo(f"imported {r.get('imported', 0)}, duplicates {r.get('duplicates', 0)}, failed {r.get('failed', 0)}, "
                   f"non-image files skipped {r.get('skipped_non_image', 0)}, missing {r.get('missing', 0)}")
        if r.get("summary"):
            click.echo(r["summary"])
        for failure in r.get("failures", []):
            click.echo(f"failed: {failure['file']}: {failure['reason']}")
        for skipped in r.get("skipped", []):
            click.echo(f"skipped: {skipped['file']}: {skipped['reason']}")
        if r.get("skipped_count", 0) > len(r.get("skipped", [])):
            click.echo(f"... and {r['skipped_count'] - len(r['skipped'])} more skipped")


@click.command("train")
@click.argument("name")
@click.option("--arch", default="efficientnet_lite0", show_default=True, help="camcore architecture.")
@click.option("--mode", type=click.Choice(TRAIN_MODES), default="linear", show_default=True)
@click.option("--epochs", type=int, default=None, help="Adam steps (linear, at most 20000) or passes (finetune, at most 500).")
@click.option("--input-size", type=int, default=None, help="Network input side in pixels.")
@click.option("--wait", is_flag=True, help="Wait with a progress bar; exit 1 if the job fails.")
def train_command(name: str, arch: str, mode: str, epochs: int | None, input_size: int | None, wait: bool) -> None:
    """Train a GAP classifier on collection NAME's tags (a new model version)."""
    job_id, inline = _submit("train", name, {"arch": arch, "mode": mode, "epochs": epochs, "input_size": input_size})
    job = _run_and_wait(job_id, inline=inline, wait=wait)
    if job is not None:
        click.echo(f"model version {job.result['model_version_id']}")
        if job.result.get("summary"):  # the box threshold chosen, classes boxed by the objectness alone
            click.echo(job.result["summary"])


@click.command("infer")
@click.argument("name")
@click.option("--model", "model", default=None, help="Model version id, or 'imagenet' (default: newest trained on NAME).")
@click.option("--top-k", type=int, default=1, show_default=True, help="Classes per untagged image.")
@click.option("--wait", is_flag=True, help="Wait with a progress bar; exit 1 if the job fails.")
def infer_command(name: str, model: str | None, top_k: int, wait: bool) -> None:
    """Propose boxes and concept maps for every image of collection NAME."""
    job_id, inline = _submit("infer", name, {"top_k": top_k, "model_version_id": model})
    job = _run_and_wait(job_id, inline=inline, wait=wait)
    if job is not None:
        r = job.result or {}
        click.echo(f"{r.get('images', 0)} images, {r.get('boxes', 0)} boxes, {r.get('images_failed', 0)} failed, model version {r.get('model_version_id')}")


@click.command("export")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), required=True)
@click.option("--status", type=click.Choice(BOX_STATUSES), default="accepted", show_default=True)
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), required=True,
              help="Output file (coco, coco-results; yolo/voc: a .zip file or a folder).")
@click.option("--include-unreviewed", is_flag=True,
              help="Also images nobody reviewed (by default only reviewed images: an unreviewed one would teach a detector "
                   "that its objects are background).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="yolo/voc: share of the images held out for validation (images/val, ImageSets/Main/val.txt).")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True, help="Seed of the train/val draw.")
def export_command(name: str, fmt: str, status: str, output: Path, include_unreviewed: bool, val_fraction: float, seed: int) -> None:
    """Export collection NAME's boxes as COCO, COCO results, YOLO or Pascal VOC."""
    params: dict[str, Any] = {"format": fmt, "status": status, "include_unreviewed": include_unreviewed}
    if val_fraction:
        params.update(val_fraction=val_fraction, seed=seed)
    job_id, inline = _submit("export", name, params)
    job = _run_and_wait(job_id, inline=inline, wait=True, quiet=True)
    output = save_export(_runtime().blobs.local_path(job.result["export_key"]), output)
    r = job.result
    click.echo(f"wrote {output} ({r.get('images', 0)} images, {r.get('annotations', 0)} annotations"
               + ("" if include_unreviewed else "; reviewed images only") + ")")


@click.command("evaluate")
@click.argument("name")
@click.option("--status", "box_status", type=click.Choice(EVALUATE_BOX_STATUSES), default="all", show_default=True,
              help="all proposals, accepted boxes, or reviewed (accepted boxes on the reviewed images only).")
@click.option("--model", "model_version_id", type=int, default=None, help="Only this model version's boxes.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate_command(name: str, box_status: str, model_version_id: int | None, as_json: bool) -> None:
    """Score collection NAME's boxes against its ground truth (CorLoc@0.5, MaxBoxAccV2, AP50, AP)."""
    job_id, inline = _submit("evaluate", name, {"box_status": box_status, "model_version_id": model_version_id})
    job = _run_and_wait(job_id, inline=inline, wait=True, quiet=True)
    metrics = job.result["metrics"]
    if as_json:
        click.echo(json.dumps(metrics))
        return
    for key, value in metrics.items():
        if not isinstance(value, (dict, list)):
            click.echo(f"{key}: {value}")


# -- job list and cancel -------------------------------------------------------------------
def _job_dict(job: Any) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind.value, "status": job.status.value, "done": job.done, "total": job.total, "error": job.error}


@click.command("jobs")
@click.argument("name")
@click.argument("job_id", required=False, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {id, kind, status, done, total, error}.")
def jobs_command(name: str, job_id: int | None, as_json: bool) -> None:
    """List the jobs of collection NAME, or `jobs cancel ID` to cancel job ID."""
    runtime = _runtime()
    if name == "cancel" and job_id is not None:
        with runtime.sessions() as session:
            try:
                job = request_cancel(session, job_id)
            except LookupError as exc:
                raise click.ClickException(str(exc)) from exc
            state = "cancel requested (stops at its next chunk)" if job.status.value == "running" else job.status.value
            click.echo(json.dumps(_job_dict(job)) if as_json else f"job {job.id}: {state}")
        return
    if job_id is not None:
        raise click.ClickException(f"unexpected argument {job_id}; did you mean: camlabel jobs cancel {job_id}")
    with runtime.sessions() as session:
        collection_id = _collection_id(session, name)
        jobs = session.scalars(select(Job).where(Job.collection_id == collection_id).order_by(Job.id)).all()
        rows = [_job_dict(job) for job in jobs]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        progress = f"{row['done']}/{row['total']}" if row["total"] is not None else f"{row['done']}/?"
        error = f"  {row['error']}" if row["error"] else ""
        click.echo(f"{row['id']}\t{row['kind']}\t{row['status']}\t{progress}{error}")


# -- the worker process --------------------------------------------------------------------
@click.command("worker")
@click.option("--queues", default="gpu,cpu", show_default=True, help="Comma-separated queues to consume.")
@click.option("--pool", type=click.Choice(["solo", "prefork"]), default="solo", show_default=True)
@click.option("--concurrency", type=int, default=1, show_default=True)
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--hostname", default=None, help="Celery node name (default camlabel-<pid>@<host>).")
def worker_command(queues: str, pool: str, concurrency: int, loglevel: str, hostname: str | None) -> None:
    """Run a Celery worker for camlabel jobs (needs REDIS_URL)."""
    runtime = _runtime()
    if runtime.settings.embedded:
        raise click.ClickException("REDIS_URL is not set: in embedded mode jobs run in-process; a separate worker needs Redis")
    names = [q.strip() for q in queues.split(",") if q.strip()]
    if not names:
        raise click.ClickException("--queues names no queue")
    app = configure_celery(runtime.settings)
    argv = ["worker", "-Q", ",".join(names), "--pool", pool, "--concurrency", str(concurrency), "--loglevel", loglevel,
            "-n", hostname or f"camlabel-{os.getpid()}@%h", "--without-gossip", "--without-mingle"]
    app.worker_main(argv)


@click.command("calibrate")
@click.argument("name")
@click.option("--model", "model_version_id", type=int, default=None, help="Model version (default: the newest with maps here).")
@click.option("--wait", is_flag=True, help="Wait with a progress bar; exit 1 if the job fails.")
@click.option("--preview", is_flag=True, help="Only say what would be learned and its leave-one-out estimate; change nothing.")
def calibrate_command(name: str, model_version_id: int | None, wait: bool, preview: bool) -> None:
    """Learn from NAME's accepted/corrected boxes (20 reviewed images in total is a good start): the
    collection's threshold rule, per-class rules and box corrections, the box scores, and a location
    map on the images' stored descriptor codes when it localises the reviewed images better; then
    recompute the proposals of unreviewed images from the stored maps and codes (no model pass)."""
    job_id, inline = _submit("calibrate", name, {"model_version_id": model_version_id, "preview": preview})
    job = _run_and_wait(job_id, inline=inline, wait=wait or preview)
    if job is not None:
        r = job.result or {}
        if r.get("summary"):
            click.echo(r["summary"])
        if not r.get("preview"):
            click.echo(f"calibrated model version {r.get('model_version_id')} from {r.get('reviewed_images', 0)} reviewed images; "
                       f"{r.get('boxes', 0)} proposals recomputed on {r.get('images', 0)} images")


COMMANDS: list[click.Command] = [
    collections_group, import_command, train_command, infer_command, export_command, evaluate_command, calibrate_command,
    jobs_command, worker_command,
]
