"""How the CLI reports a service's refusal: ``Error: <message>`` with exit status 1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from web.services.errors import ServiceError


def cli_message(exc: ServiceError) -> str:
    """The error's message without the ``<field>: `` prefix the API uses (a command's arguments
    are positional, so the field name would only confuse)."""
    field = exc.extra.get("field")
    prefix = f"{field}: " if isinstance(field, str) else ""
    return exc.message[len(prefix):] if prefix and exc.message.startswith(prefix) else exc.message


@contextmanager
def reported() -> Iterator[None]:
    """Run a block that calls services; a :class:`ServiceError` ends the command with its message."""
    try:
        yield
    except ServiceError as exc:
        raise click.ClickException(cli_message(exc)) from None
