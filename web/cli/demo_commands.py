"""``camlabel demo``: migrate, load the sample collection, train, infer, evaluate, then serve."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from web.auth import create_user, set_password
from web.cli import formats_commands, job_commands, user_commands
from web.demo_data import generate_shapes_collection
from worker.runtime import get_runtime
from worker.store.db import session_scope
from worker.store.migrate import upgrade
from worker.store.models import Box, BoxSource, Collection, Image, User

DEMO_EMAIL = "demo@camlabel.local"
SHARED_DATASET = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "raccoon-kangaroo"


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--dataset", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="Folder in the ROOT/<tag>/... layout (default: ../shared/datasets/raccoon-kangaroo, else generated).")
@click.option("--serve/--no-serve", default=True, show_default=True, help="Serve the dashboard when done.")
@click.pass_context
@with_appcontext
def demo(ctx: click.Context, host: str, port: int, dataset: Path | None, serve: bool) -> None:
    """Set up a demo on this machine's database (SQLite by default) and the embedded worker."""
    runtime = get_runtime()
    upgrade(runtime.settings.database_url)
    password = _reset_demo_user()

    generated: Path | None = None
    if dataset is None and SHARED_DATASET.is_dir():
        dataset = SHARED_DATASET
    if dataset is None:
        generated = Path(tempfile.mkdtemp(prefix="camlabel-demo-"))
        dataset = generate_shapes_collection(generated / "shapes")
    name = dataset.name
    try:
        if not _collection_has_boxes(name):
            if not _collection_exists(name):
                ctx.invoke(job_commands.collections_create, name=name)
                ctx.invoke(job_commands.import_command, name=name, path=dataset, manifest=None, wait=True)
                if any(dataset.glob("*/annotations/*.xml")):
                    ctx.invoke(formats_commands.gt_import, name=name, path=dataset, fmt="voc")
            ctx.invoke(job_commands.train_command, name=name, arch="efficientnet_lite0", mode="linear", epochs=None, input_size=None, wait=True)
            ctx.invoke(job_commands.infer_command, name=name, model=None, top_k=1, wait=True)
            if any(dataset.glob("*/annotations/*.xml")):
                ctx.invoke(job_commands.evaluate_command, name=name, box_status="all", model_version_id=None, as_json=False)
    finally:
        if generated is not None:
            shutil.rmtree(generated, ignore_errors=True)
    click.echo("")
    click.echo(f"camlabel demo ready: http://{host}:{port}/  login: {DEMO_EMAIL}  password: {password}")
    if serve:
        ctx.invoke(user_commands.run, host=host, port=port)


def _reset_demo_user() -> str:
    """Create the demo admin (or give it a fresh password); returns the password to print."""
    password = secrets.token_urlsafe(9)
    with session_scope(get_runtime().sessions) as session:
        user = session.scalar(select(User).where(User.email == DEMO_EMAIL))
        if user is None:
            create_user(session, DEMO_EMAIL, password, admin=True)
        else:
            set_password(session, user, password)  # ends the sessions opened with the old password
            user.active = True
    return password


def _collection_exists(name: str) -> bool:
    with get_runtime().sessions() as session:
        return session.scalar(select(Collection.id).where(Collection.name == name)) is not None


def _collection_has_boxes(name: str) -> bool:
    with get_runtime().sessions() as session:
        query = (
            select(Box.id).join(Image, Image.id == Box.image_id).join(Collection, Collection.id == Image.collection_id)
            .where(Collection.name == name, Box.source == BoxSource.cam).limit(1)
        )
        return session.scalar(query) is not None


COMMANDS: list[click.Command] = [demo]
