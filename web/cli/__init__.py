"""The ``camlabel`` command: a Flask CLI group; each command group lives in its own
``web/cli/*_commands.py`` module, which lists them in ``COMMANDS``."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import FlaskGroup

from web import create_app


def _create_app() -> Flask:
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
