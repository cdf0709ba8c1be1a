"""Login throttling per account and per client address (the ``limits`` library: Redis storage
when ``REDIS_URL`` is set, so every web process counts together; process memory otherwise).

Only failed logins are counted, over a moving window of ``LOGIN_WINDOW_S`` seconds: after
``LOGIN_MAX_FAILURES_PER_ACCOUNT`` failures for one email, or ``LOGIN_MAX_FAILURES_PER_ADDRESS``
from one address, further attempts are refused with 429 and ``Retry-After`` without checking the
password (so a right guess inside the block does not get through either). A successful login
clears its account's count. Emails are counted whether or not they exist, so the answer never
tells which exist.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

from flask import Flask, current_app, request
from limits import RateLimitItemPerSecond
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
_STORAGE_ERRORS: tuple[type[Exception], ...] = (ConnectionError, TimeoutError, OSError, RedisError)
_EXTENSION = "camlabel.login_throttle"


@dataclass
class LoginThrottle:
    """Failure counters for logins (one limiter over a shared storage)."""

    storage: Storage
    per_account: int
    per_address: int
    window_s: int

    def __post_init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(self.storage)
        self._account = RateLimitItemPerSecond(self.per_account, self.window_s, namespace="camlabel-login-account")
        self._address = RateLimitItemPerSecond(self.per_address, self.window_s, namespace="camlabel-login-address")

    def blocked_for(self, email: str, address: str) -> int:
        """Seconds until a login for ``email`` from ``address`` may be tried again; 0 = allowed now.

        With the storage unreachable (Redis down) logins are allowed: the password still guards them."""
        try:
            return max(self._wait(self._account, _account_key(email)), self._wait(self._address, address))
        except _STORAGE_ERRORS as exc:
            log.warning("login throttle storage unavailable, not throttling: %s", exc)
            return 0

    def failed(self, email: str, address: str) -> None:
        """Count a failed login for the account and for the address."""
        try:
            self._limiter.hit(self._account, _account_key(email))
            self._limiter.hit(self._address, address)
        except _STORAGE_ERRORS as exc:
            log.warning("login throttle storage unavailable, failure not counted: %s", exc)

    def succeeded(self, email: str) -> None:
        """A right password: the account's failures are forgotten (the address's are kept)."""
        try:
            self._limiter.clear(self._account, _account_key(email))
        except _STORAGE_ERRORS as exc:
            log.warning("login throttle storage unavailable: %s", exc)

    def _wait(self, item: RateLimitItemPerSecond, key: str) -> int:
        if self._limiter.test(item, key):
            return 0
        reset = self._limiter.get_window_stats(item, key).reset_time
        return max(1, int(reset - time.time()) + 1)


def _account_key(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]  # no emails in Redis keys


def client_address() -> str:
    """The client's address (``X-Forwarded-For`` only through ``ProxyFix``, see :mod:`web.security`)."""
    return request.remote_addr or "unknown"


def login_throttle() -> LoginThrottle:
    return current_app.extensions[_EXTENSION]


def init_app(app: Flask, redis_url: str | None) -> None:
    """Attach the throttle: Redis storage for ``redis_url``, else this process's memory."""
    storage = storage_from_string(redis_url or "memory://")
    if not isinstance(storage, Storage):  # an async+ scheme: the throttle calls the storage synchronously
        raise ValueError(f"login throttle needs a synchronous storage, not {redis_url!r}")
    app.extensions[_EXTENSION] = LoginThrottle(
        storage=storage,
        per_account=int(app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]),
        per_address=int(app.config["LOGIN_MAX_FAILURES_PER_ADDRESS"]),
        window_s=int(app.config["LOGIN_WINDOW_S"]),
    )
