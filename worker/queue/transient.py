"""Errors worth a retry with backoff: lost database or broker connections.

The task retries on them (``autoretry_for``) after releasing the job's claim; anything else
fails the job with its message.
"""

from __future__ import annotations

from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, RedisConnectionError, RedisTimeoutError, KombuOperationalError)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a lost database or broker connection."""
    return isinstance(exc, TRANSIENT_ERRORS) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
