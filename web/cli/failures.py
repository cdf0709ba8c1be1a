"""How the CLI reports a service's refusal: ``Error: <reason>`` with exit status 1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from web.services.errors import ServiceError


@contextmanager
def reported() -> Iterator[None]:
    """Run a block that calls services; a :class:`ServiceError` ends the command with its reason
    (a command's arguments are positional, so the API's field name is left out)."""
    try:
        yield
    except ServiceError as exc:
        raise click.ClickException(exc.reason) from None
