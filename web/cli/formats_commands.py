"""``camlabel gt import NAME PATH --format coco|voc|yolo``: ground truth for evaluation;
``camlabel review no-objects NAME IMAGE_PATH [--undo]``: mark an image as a reviewed negative.

(``camlabel export`` and ``camlabel evaluate`` run as jobs and live with the job commands.)
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from web.cli.failures import reported
from web.services.collections import collection_by_name
from web.services.review import clear_no_objects, set_no_objects
from worker.formats import IMPORT_FORMATS, FormatError, import_ground_truth
from worker.runtime import get_runtime
from worker.store.db import session_scope
from worker.store.models import Image

MAX_LISTED = 50


@click.group("gt")
def gt() -> None:
    """Ground-truth boxes (used to evaluate, never to train or export as pseudo-labels)."""


@gt.command("import")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(IMPORT_FORMATS), required=True, help="COCO JSON, Pascal VOC XML folder, or YOLO txt folder (+ data.yaml).")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@with_appcontext
def gt_import(name: str, path: Path, fmt: str, as_json: bool) -> None:
    """Import ground truth from PATH into collection NAME.

    Images are matched by relative path, then by file name; importing again replaces the
    ground truth of the images named. Bad files are listed with their reason; the command fails
    only when nothing could be imported.
    """
    runtime = get_runtime()
    try:
        with session_scope(runtime.sessions) as session, reported():
            report = import_ground_truth(session, collection_by_name(session, name).id, path, fmt)
    except FormatError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(
            f"{report.files} file(s) read: {report.images_matched} image(s) matched, {report.boxes_imported} box(es) imported "
            f"({report.boxes_replaced} replaced, {report.boxes_clipped} clipped, {report.boxes_rejected} rejected)"
        )
        if report.categories_created:
            click.echo("new categories: " + ", ".join(report.categories_created))
        for label, issues in (("error", report.errors), ("warning", report.warnings)):
            for issue in issues[:MAX_LISTED]:
                click.echo(f"{label}: {issue.file}: {issue.reason}", err=True)
            if len(issues) > MAX_LISTED:
                click.echo(f"... and {len(issues) - MAX_LISTED} more {label}s (use --json for all)", err=True)
    if not report.ok:
        raise click.ClickException("nothing was imported")


@click.group("review")
def review() -> None:
    """Review actions from the command line."""


@review.command("no-objects")
@click.argument("name")
@click.argument("image_path")
@click.option("--undo", is_flag=True, help="Take the mark back (the image stays reviewed).")
@with_appcontext
def no_objects(name: str, image_path: str, undo: bool) -> None:
    """Mark image IMAGE_PATH (its path in the collection, as shown in the review) of collection
    NAME as showing no objects: its boxes are rejected and exports keep it as a negative."""
    with get_runtime().sessions() as session, reported():
        collection_id = collection_by_name(session, name).id
        image_id = session.scalar(select(Image.id).where(Image.collection_id == collection_id, Image.rel_path == image_path))
        if image_id is None:
            raise click.ClickException(f"collection {name!r} has no image {image_path!r}")
        if undo:
            clear_no_objects(session, image_id, user_id=None)
            click.echo(f"{image_path}: 'no objects' taken back (still reviewed)")
        else:
            _image, rejected = set_no_objects(session, image_id, None, user_id=None)
            click.echo(f"{image_path}: marked 'no objects' ({len(rejected)} box(es) rejected)")


COMMANDS: list[click.Command] = [gt, review]
