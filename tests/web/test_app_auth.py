"""Factory, health, login, CSRF, API tokens and roles."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from tests.web.helpers import PASSWORD, Factory, csrf_from, login


def test_healthz_needs_no_login(app: Flask) -> None:
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_factory_maps_settings_and_persists_a_secret(make_app, sqlite_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = make_app(sqlite_url, SECRET_KEY=None)
    runtime = first.extensions["camlabel"]
    assert runtime.settings.database_url == sqlite_url
    assert runtime.settings.data_dir == (tmp_path / "data").resolve()
    assert runtime.settings.embedded
    secret_file = tmp_path / "data" / "secret_key"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    second = make_app(sqlite_url, SECRET_KEY=None)
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"] == secret_file.read_text().strip()


def test_secret_key_from_environment(make_app, sqlite_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CAMLABEL_SECRET_KEY", "from-the-env-0123456789abcdefghijklmnop")
    app = make_app(sqlite_url, SECRET_KEY=None)
    assert app.config["SECRET_KEY"] == "from-the-env-0123456789abcdefghijklmnop"


def test_anonymous_pages_redirect_and_api_answers_401_json(app: Flask, factory: Factory) -> None:
    client = app.test_client()
    cid, _ = factory.collection()
    for path in ("/", f"/collections/{cid}", f"/review/collections/{cid}", "/account"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert "/login" in response.headers["Location"]
    for path in ("/api/v1/collections", f"/api/v1/collections/{cid}/images", "/api/v1/me"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/api/v1/openapi.json").status_code == 200
    assert client.get("/blobs/images/00/00/" + "0" * 64 + ".png").status_code == 302


def test_login_wrong_password_and_logout(app: Flask, factory: Factory) -> None:
    factory.user("someone@example.com")
    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    bad = client.post("/login", data={"email": "someone@example.com", "password": "wrong password", "csrf_token": token})
    assert bad.status_code == 401
    assert "Wrong email or password" in bad.get_data(as_text=True)
    browser = login(client, "someone@example.com")
    assert browser.api("GET", "/api/v1/me").get_json()["email"] == "someone@example.com"
    out = browser.form("/logout", {})
    assert out.status_code == 302
    assert client.get("/api/v1/me").status_code == 401


def test_login_redirects_only_to_local_next(app: Flask, factory: Factory) -> None:
    factory.user("someone@example.com")
    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login?next=https://evil.example/x", data={"email": "someone@example.com", "password": PASSWORD, "csrf_token": token})
    assert response.headers["Location"] == "/"


def test_csrf_is_enforced_for_cookie_sessions(app: Flask, reviewer) -> None:  # type: ignore[no-untyped-def]
    assert app.config.get("WTF_CSRF_ENABLED", True) is True
    client = reviewer.client
    no_token = client.post("/api/v1/collections", json={"name": "x"}, headers={"Accept": "application/json"})
    assert no_token.status_code == 400
    assert no_token.get_json()["error"]["code"] == "csrf_failed"
    wrong = client.post("/api/v1/collections", json={"name": "x"}, headers={"X-CSRFToken": "forged"})
    assert wrong.status_code == 400
    form = client.post("/collections", data={"name": "y"})
    assert form.status_code == 400
    assert "CSRF" in form.get_data(as_text=True)
    ok = reviewer.api("POST", "/api/v1/collections", {"name": "x"})
    assert ok.status_code == 201, ok.get_json()


def test_bearer_tokens_are_hashed_revocable_and_skip_csrf(app: Flask, reviewer) -> None:  # type: ignore[no-untyped-def]
    created = reviewer.api("POST", "/api/v1/tokens", {"name": "script"})
    assert created.status_code == 201
    secret = created.get_json()["token"]
    anon = app.test_client()  # no cookie at all
    headers = {"Authorization": f"Bearer {secret}"}
    assert anon.get("/api/v1/me", headers=headers).get_json()["email"] == "reviewer@example.com"
    made = anon.post("/api/v1/collections", json={"name": "by-token"}, headers=headers)
    assert made.status_code == 201  # no CSRF needed: no cookie is involved
    from worker.store.models import ApiToken

    with app.extensions["camlabel"].sessions() as s:
        row = s.get(ApiToken, created.get_json()["id"])
        assert row.token_hash != secret and secret not in row.token_hash and len(row.token_hash) == 64
    assert reviewer.api("DELETE", f"/api/v1/tokens/{row.id}").status_code == 204
    refused = anon.get("/api/v1/me", headers=headers)
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "invalid_token"
    assert anon.get("/api/v1/me", headers={"Authorization": "Bearer cl_not-a-token"}).status_code == 401


def test_roles_admin_only_for_users_and_deletes(app: Flask, factory: Factory, reviewer, admin) -> None:  # type: ignore[no-untyped-def]
    cid, _ = factory.collection("to-delete")
    forbidden = reviewer.api("DELETE", f"/api/v1/collections/{cid}")
    assert forbidden.status_code == 403
    assert forbidden.get_json()["error"]["code"] == "forbidden"
    assert reviewer.api("GET", "/api/v1/users").status_code == 403
    assert reviewer.client.get("/users").status_code == 403
    made = admin.api("POST", "/api/v1/users", {"email": "new@example.com", "password": "long enough pw"})
    assert made.status_code == 201 and made.get_json()["role"] == "reviewer"
    assert admin.api("POST", "/api/v1/users", {"email": "new@example.com", "password": "long enough pw"}).status_code == 400
    assert admin.api("DELETE", f"/api/v1/collections/{cid}").status_code == 204
    assert admin.api("GET", f"/api/v1/collections/{cid}").status_code == 404


def test_errors_are_json_with_codes_and_never_tracebacks(app: Flask, reviewer, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    missing = reviewer.api("GET", "/api/v1/collections/999999")
    assert missing.status_code == 404
    assert missing.get_json() == {"error": {"code": "not_found", "message": "no collection 999999"}}
    assert reviewer.api("GET", "/api/v1/nope").get_json()["error"]["code"] == "not_found"
    method = reviewer.api("PUT", "/api/v1/collections")
    assert method.status_code == 405 and method.get_json()["error"]["code"] == "method_not_allowed"
    bad = reviewer.api("POST", "/api/v1/collections", {"name": "../etc"})
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_name"

    import web.dashboard

    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(web.dashboard, "render_template", boom)  # the next page render fails unexpectedly
    for accept in ("text/html", "application/json"):
        response = reviewer.client.get("/account", headers={"Accept": accept})
        body = response.get_data(as_text=True)
        assert response.status_code == 500
        assert "secret internal detail" not in body and "Traceback" not in body
        assert "internal error" in body


def test_cli_users_and_tokens(app: Flask) -> None:
    from web.cli.user_commands import tokens, users

    runner = app.test_cli_runner()
    result = runner.invoke(users, ["create", "Cli@Example.com", "--password", "long enough pw", "--admin"])
    assert result.exit_code == 0, result.output
    assert "admin" in result.output
    duplicate = runner.invoke(users, ["create", "cli@example.com", "--password", "long enough pw"])
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output
    short = runner.invoke(users, ["create", "b@example.com", "--password", "short"])
    assert short.exit_code != 0 and "8 characters" in short.output
    made = runner.invoke(tokens, ["create", "cli@example.com"])
    assert made.exit_code == 0, made.output
    secret = made.output.strip().splitlines()[-1]
    me = app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.get_json()["role"] == "admin"
    assert runner.invoke(tokens, ["create", "nobody@example.com"]).exit_code != 0
