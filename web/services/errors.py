"""The errors services raise: what went wrong in domain terms, never an HTTP status.

Every error carries ``code`` (a stable machine word such as ``not_found`` or ``stale_edit``),
``message`` (a sentence for people) and ``extra`` (more JSON fields, e.g. ``field`` naming the
input at fault or ``current`` holding the row as stored). :mod:`web.errors` maps each class to
its HTTP response; the CLI prints ``message``.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A request a service refused; subclasses say why."""

    def __init__(self, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    @property
    def reason(self) -> str:
        """``message`` without the ``<field>: `` it starts with when ``extra["field"]`` names one
        (for a page or a command, where the field's name would only confuse)."""
        field = self.extra.get("field")
        prefix = f"{field}: " if isinstance(field, str) else ""
        return self.message[len(prefix):] if prefix and self.message.startswith(prefix) else self.message


class Invalid(ServiceError):
    """The input breaks a rule (a bad field, a job that cannot run, a box outside its image)."""


class NotFound(ServiceError):
    """The thing named does not exist (any more)."""


class Forbidden(ServiceError):
    """The thing exists but may not be changed this way (ground-truth boxes, a wrong password)."""


class Conflict(ServiceError):
    """The request collides with the stored state (a name taken, a row changed since it was read)."""


class Unavailable(ServiceError):
    """A service the request needs is down; what was recorded stays, and trying later works."""
