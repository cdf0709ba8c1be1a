"""Signing key, sessions and logins: a weak key refuses to start, cookies die on logout and on a
password change, cookies are Secure over HTTPS (behind ProxyFix), logins are throttled per
account and per address (Redis-backed across processes), and a failed login costs the same
whether the email exists or not."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.web.helpers import PASSWORD, Factory, csrf_from, login


# -- signing key ----------------------------------------------------------------------------------
@pytest.mark.parametrize("weak", ["change-me", "CHANGE_ME", "secret", "dev", "short-but-random-9f3", "a" * 64])
def test_weak_or_placeholder_secret_key_refuses_to_start(make_app: Callable[..., Flask], sqlite_url: str,
                                                          monkeypatch: pytest.MonkeyPatch, weak: str) -> None:
    from web.secret import WeakSecretError

    monkeypatch.setenv("CAMLABEL_SECRET_KEY", weak)
    with pytest.raises(WeakSecretError, match="CAMLABEL_SECRET_KEY"):
        make_app(sqlite_url, SECRET_KEY=None)


def test_forged_admin_cookie_signed_with_a_placeholder_key_is_refused(make_app: Callable[..., Flask], sqlite_url: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A placeholder key such as ``change-me`` lets anyone sign ``{"_user_id": "1"}``: no app runs
    with it, and a generated key (the dev path) does not accept such a cookie either."""
    from flask.sessions import SecureCookieSessionInterface

    from web.secret import WeakSecretError

    monkeypatch.setenv("CAMLABEL_SECRET_KEY", "change-me")
    with pytest.raises(WeakSecretError):
        make_app(sqlite_url, SECRET_KEY=None)
    monkeypatch.delenv("CAMLABEL_SECRET_KEY")
    app = make_app(sqlite_url, SECRET_KEY=None)  # dev path: a key generated and kept in the data dir
    Factory(app).user("admin@example.com", admin=True)
    forger = Flask("forger")
    forger.secret_key = "change-me"
    forged = SecureCookieSessionInterface().get_signing_serializer(forger).dumps({"_user_id": "1", "_fresh": True})  # type: ignore[union-attr]
    client = app.test_client()
    client.set_cookie("session", forged)
    assert client.get("/api/v1/users").status_code == 401


# -- session invalidation -------------------------------------------------------------------------
def _session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def _client_with(app: Flask, cookie: str) -> FlaskClient:
    client = app.test_client()
    client.set_cookie("session", cookie)
    return client


def test_cookie_captured_before_logout_is_refused_after_it(app: Flask, factory: Factory) -> None:
    factory.user("someone@example.com")
    browser = login(app.test_client(), "someone@example.com")
    captured = _session_cookie(browser.client)
    assert _client_with(app, captured).get("/api/v1/me").status_code == 200
    assert browser.form("/logout", {}).status_code == 302
    assert _client_with(app, captured).get("/api/v1/me").status_code == 401
    again = login(app.test_client(), "someone@example.com")  # logging in again works
    assert again.api("GET", "/api/v1/me").status_code == 200


def test_password_change_ends_every_session_of_the_account(app: Flask, factory: Factory) -> None:
    factory.user("someone@example.com")
    first = login(app.test_client(), "someone@example.com")
    second = login(app.test_client(), "someone@example.com")
    wrong = first.api("POST", "/api/v1/me/password", {"current_password": "nope-nope", "new_password": "another long one"})
    assert wrong.status_code == 403
    short = first.api("POST", "/api/v1/me/password", {"current_password": PASSWORD, "new_password": "short"})
    assert short.status_code == 400 and short.get_json()["error"]["field"] == "new_password"
    changed = first.api("POST", "/api/v1/me/password", {"current_password": PASSWORD, "new_password": "another long one"})
    assert changed.status_code == 204
    assert second.api("GET", "/api/v1/me").status_code == 401
    assert first.api("GET", "/api/v1/me").status_code == 401
    login(app.test_client(), "someone@example.com", "another long one")


def test_password_change_from_the_account_page_logs_out_everywhere(app: Flask, factory: Factory) -> None:
    factory.user("someone@example.com")
    browser = login(app.test_client(), "someone@example.com")
    elsewhere = login(app.test_client(), "someone@example.com")
    assert 'id="password-form"' in browser.client.get("/account").get_data(as_text=True)
    wrong = browser.form("/account/password", {"current_password": "not it at all", "new_password": "another long one"},
                         follow_redirects=True)
    assert "The current password is wrong." in wrong.get_data(as_text=True)
    short = browser.form("/account/password", {"current_password": PASSWORD, "new_password": "short"}, follow_redirects=True)
    assert "at least 8 characters" in short.get_data(as_text=True)
    changed = browser.form("/account/password", {"current_password": PASSWORD, "new_password": "another long one"})
    assert changed.status_code == 302 and changed.headers["Location"].endswith("/login")
    assert elsewhere.api("GET", "/api/v1/me").status_code == 401
    assert browser.client.get("/account").status_code == 302  # this browser too
    login(app.test_client(), "someone@example.com", "another long one")


def test_cli_set_password_logs_the_account_out(app: Flask, factory: Factory) -> None:
    factory.user("someone@example.com")
    browser = login(app.test_client(), "someone@example.com")
    from web.cli.user_commands import users

    result = app.test_cli_runner().invoke(users, ["set-password", "someone@example.com", "--password", "brand new secret"])
    assert result.exit_code == 0, result.output
    assert browser.api("GET", "/api/v1/me").status_code == 401
    login(app.test_client(), "someone@example.com", "brand new secret")


# -- Secure cookies behind HTTPS ------------------------------------------------------------------
def _login_set_cookie(client: FlaskClient, **kwargs: object) -> str:
    page = client.get("/login", **kwargs)  # type: ignore[arg-type]
    token = csrf_from(page.get_data(as_text=True))
    response = client.post("/login", data={"email": "someone@example.com", "password": PASSWORD, "csrf_token": token}, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 302
    return "; ".join(v for k, v in response.headers.items() if k.lower() == "set-cookie")


def test_session_cookie_is_secure_over_https_behind_a_proxy(make_app: Callable[..., Flask], sqlite_url: str) -> None:
    app = make_app(sqlite_url, PROXY_FIX=1)
    Factory(app).user("someone@example.com")
    plain = _login_set_cookie(app.test_client())
    assert "session=" in plain and "Secure" not in plain
    https = _login_set_cookie(app.test_client(), headers={"X-Forwarded-Proto": "https", "Referer": "https://localhost/login"})
    assert "session=" in https and "Secure" in https and "HttpOnly" in https


def test_forwarded_proto_is_ignored_without_proxy_fix_and_secure_can_be_forced(make_app: Callable[..., Flask], sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    Factory(app).user("someone@example.com")
    untrusted = _login_set_cookie(app.test_client(), headers={"X-Forwarded-Proto": "https", "Referer": "https://localhost/login"})
    assert "Secure" not in untrusted  # the header is not trusted without CAMLABEL_PROXY_FIX
    forced = make_app(sqlite_url, SESSION_COOKIE_SECURE=True)
    assert "Secure" in _login_set_cookie(forced.test_client())


# -- login throttling -----------------------------------------------------------------------------
def _try_login(client: FlaskClient, email: str, password: str):  # type: ignore[no-untyped-def]
    token = csrf_from(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def test_login_is_throttled_per_account(make_app: Callable[..., Flask], sqlite_url: str) -> None:
    app = make_app(sqlite_url, LOGIN_MAX_FAILURES_PER_ACCOUNT=5)
    Factory(app).user("someone@example.com")
    for _ in range(5):
        assert _try_login(app.test_client(), "someone@example.com", "wrong password").status_code == 401
    blocked = _try_login(app.test_client(), "someone@example.com", PASSWORD)  # even the right password waits
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
    assert "Too many failed logins" in blocked.get_data(as_text=True)
    Factory(app).user("other@example.com")
    assert _try_login(app.test_client(), "other@example.com", PASSWORD).status_code == 302  # other accounts unaffected


def test_login_is_throttled_per_address_across_emails(make_app: Callable[..., Flask], sqlite_url: str) -> None:
    app = make_app(sqlite_url, LOGIN_MAX_FAILURES_PER_ADDRESS=6)
    attacker = {"REMOTE_ADDR": "198.51.100.9"}
    for n in range(6):
        client = app.test_client()
        client.environ_base.update(attacker)
        assert _try_login(client, f"guess{n}@example.com", "wrong password").status_code == 401
    client = app.test_client()
    client.environ_base.update(attacker)
    assert _try_login(client, "guess-next@example.com", "wrong password").status_code == 429
    Factory(app).user("someone@example.com")
    assert _try_login(app.test_client(), "someone@example.com", PASSWORD).status_code == 302  # another address


@pytest.mark.redis
def test_login_throttle_is_shared_by_processes_through_redis(make_app: Callable[..., Flask], sqlite_url: str, redis_url: str) -> None:
    """Two app instances (two gunicorn workers) count failures in one Redis. The apps stay in
    embedded mode (the process-wide Celery app is left alone); their throttle is attached to Redis
    as ``create_app`` does when ``REDIS_URL`` is set."""
    import uuid

    from web import throttle as throttle_module

    email = f"shared-{uuid.uuid4().hex[:8]}@example.com"
    first = make_app(sqlite_url, LOGIN_MAX_FAILURES_PER_ACCOUNT=4)
    second = make_app(sqlite_url, LOGIN_MAX_FAILURES_PER_ACCOUNT=4)
    for app in (first, second):
        throttle_module.init_app(app, redis_url)
        assert type(app.extensions["camlabel.login_throttle"].storage).__name__ == "RedisStorage"
    address = f"192.0.2.{uuid.uuid4().int % 250 + 1}"
    try:
        for app in (first, second, first, second):
            client = app.test_client()
            client.environ_base["REMOTE_ADDR"] = address
            assert _try_login(client, email, "wrong password").status_code == 401
        client = first.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        assert _try_login(client, email, "wrong password").status_code == 429
    finally:
        throttle = first.extensions["camlabel.login_throttle"]
        throttle.succeeded(email)
        throttle._limiter.clear(throttle._address, address)


def test_failed_login_costs_the_same_for_unknown_and_known_emails(app: Flask, factory: Factory,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A login that skipped the password hash for an unknown email would tell which emails exist
    by its time: both paths do one password-hash check, at the product's default cost."""
    from web.auth import DEFAULT_PASSWORD_HASH, PASSWORD_HASH_ENV, authenticate

    monkeypatch.setenv(PASSWORD_HASH_ENV, DEFAULT_PASSWORD_HASH)
    factory.user("known@example.com")
    session = factory.session()

    def timed(email: str) -> float:
        start = time.perf_counter()
        assert authenticate(session, email, "wrong password") is None
        return time.perf_counter() - start

    timed("nobody@example.com")  # the dummy hash is made once
    known = statistics.median(timed("known@example.com") for _ in range(5))
    unknown = statistics.median(timed("nobody@example.com") for _ in range(5))
    session.close()
    assert unknown > 0.5 * known, (unknown, known)
    assert known > 0.5 * unknown, (unknown, known)


def test_password_hash_method_is_scrypt_by_default_and_set_by_the_environment(make_app: Callable[..., Flask], sqlite_url: str,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import select

    from web.auth import PASSWORD_HASH_ENV, authenticate, create_user, password_hash_method
    from worker.store.models import User

    monkeypatch.delenv(PASSWORD_HASH_ENV)
    assert password_hash_method() == "scrypt"
    monkeypatch.setenv(PASSWORD_HASH_ENV, "pbkdf2:sha256:2000")
    app = make_app(sqlite_url)
    sessions = app.extensions["camlabel"].sessions
    with sessions() as s:
        create_user(s, "pbkdf2@example.com", "long enough password")
        s.commit()
    monkeypatch.setenv(PASSWORD_HASH_ENV, "scrypt")  # hashes made before keep working
    with sessions() as s:
        assert s.scalar(select(User.password_hash).where(User.email == "pbkdf2@example.com")).startswith("pbkdf2:sha256:2000$")
        assert authenticate(s, "pbkdf2@example.com", "long enough password") is not None
        assert authenticate(s, "pbkdf2@example.com", "wrong password") is None
    monkeypatch.setenv(PASSWORD_HASH_ENV, "md5")
    with pytest.raises(ValueError, match="CAMLABEL_PASSWORD_HASH='md5': must be a werkzeug scrypt or pbkdf2 method"):
        make_app(sqlite_url, migrate=False)
    monkeypatch.setenv(PASSWORD_HASH_ENV, "pbkdf2:sha999")
    with sessions() as s, pytest.raises(ValueError, match="CAMLABEL_PASSWORD_HASH: "):
        create_user(s, "bad@example.com", "long enough password")
