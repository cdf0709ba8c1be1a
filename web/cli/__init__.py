"""The ``camlabel`` command: a Flask CLI group. Each area adds its commands in its own module."""

from __future__ import annotations

import click
from flask.cli import FlaskGroup


def _create_app():  # type: ignore[no-untyped-def]
    from web import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False, add_version_option=False)
def main() -> None:
    """camlabel: image tags in, reviewed bounding boxes out (class activation maps)."""


def _register() -> None:
    from web.cli import db_commands, demo_commands, formats_commands, job_commands, user_commands

    for module in (db_commands, job_commands, formats_commands, user_commands, demo_commands):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
