"""Dashboard pages: login, collections, uploads, jobs with live progress, exports, evaluations,
accounts; and ``/blobs/<key>`` which serves stored files with a fixed, inert content type."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user
from werkzeug.wrappers import Response as BaseResponse

from web.auth import admin_required, authenticate, create_token, finish_session, start_session
from web.db import blobs, db, runtime
from web.job_text import job_count
from web.limits import large_body
from web.security import CONTENT_TYPES, DOWNLOAD_TYPES
from web.services.accounts import add_user, all_users, change_password, revoke_token, tokens_of
from web.services.collections import (
    collection_overview,
    create_collection,
    delete_collection,
    get_collection,
    image_counts,
    newest_collections,
)
from web.services.errors import Forbidden, Invalid, ServiceError
from web.services.ground_truth import import_ground_truth_upload, report_issues, report_summary
from web.services.jobs import JOB_KINDS_FROM_UI, cancel_job, submit_job
from web.services.review import bulk_accept
from web.services.uploads import import_upload
from web.throttle import client_address, login_throttle
from web.validation import parse_float, parse_int
from worker.formats import EXPORT_FORMATS
from worker.jobs.params import MAX_INPUT_SIZE
from worker.preflight import DEFAULT_ARCH, architectures
from worker.store.blobs import BlobKeyError
from worker.store.models import Category

bp = Blueprint("dashboard", __name__)
LISTED_COLLECTIONS = 200
_PUBLIC = {"dashboard.login"}


@bp.before_request
def _require_login() -> BaseResponse | None:
    if request.endpoint in _PUBLIC or current_user.is_authenticated:
        return None
    return redirect(url_for("dashboard.login", next=request.full_path if request.query_string else request.path))


def _safe_next(target: str | None) -> str:
    if target and not urlsplit(target).netloc and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("dashboard.index")


def _flash_error(exc: ServiceError) -> None:
    flash(exc.message, "error")


# -- login ------------------------------------------------------------------------------------
@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | str:
    if request.method == "POST":
        email, address = request.form.get("email", "")[:320], client_address()
        throttle = login_throttle()
        wait_s = throttle.blocked_for(email, address)
        if wait_s:
            flash(f"Too many failed logins; try again in {max(1, round(wait_s / 60))} minute(s).", "error")
            return Response(render_template("login.html"), status=429, headers={"Retry-After": str(wait_s)})
        user = authenticate(db(), email, request.form.get("password", ""))
        if user is None:
            throttle.failed(email, address)
            flash("Wrong email or password.", "error")
            return Response(render_template("login.html"), status=401)
        throttle.succeeded(email)
        start_session(user)
        return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html")


@bp.post("/logout")
def logout() -> BaseResponse:
    finish_session(db())  # every cookie of this account issued so far stops working
    return redirect(url_for("dashboard.login"))


# -- collections --------------------------------------------------------------------------------
@bp.get("/")
def index() -> str:
    session = db()
    collections = newest_collections(session, LISTED_COLLECTIONS)
    return render_template("index.html", collections=collections, counts=image_counts(session, [c.id for c in collections]))


@bp.post("/collections")
def create_collection_page() -> BaseResponse:
    try:
        collection = create_collection(db(), request.form.get("name", ""))
    except ServiceError as exc:
        _flash_error(exc)
        return redirect(url_for("dashboard.index"))
    flash(f"Collection {collection.name} created.", "ok")
    return redirect(url_for("dashboard.collection", collection_id=collection.id))


@bp.get("/collections/<int:collection_id>")
def collection(collection_id: int) -> str:
    session = db()
    coll = get_collection(session, collection_id)
    overview = collection_overview(session, collection_id)
    return render_template("collection.html", collection=coll, counts=overview.image_counts, jobs=overview.jobs,
                           failed=overview.failed_images, evaluations=overview.evaluations, models=overview.models,
                           export_formats=EXPORT_FORMATS, models_by_id={m.id: m for m in overview.models}, architectures=architectures(),
                           default_arch=DEFAULT_ARCH, max_input_size=MAX_INPUT_SIZE, job_count=job_count)


@bp.post("/collections/<int:collection_id>/upload")
@large_body
def upload_page(collection_id: int) -> BaseResponse:
    try:
        job, n_files = import_upload(db(), Path(runtime().settings.data_dir), collection_id, request.files.getlist("files"),
                                     tag=request.form.get("tag"), manifest=request.files.get("manifest"), user_id=current_user.id)
    except ServiceError as exc:
        _flash_error(exc)
        return redirect(url_for("dashboard.collection", collection_id=collection_id))
    flash(f"Uploaded {n_files} file(s); import job {job.id} started.", "ok")
    return redirect(url_for("dashboard.collection", collection_id=collection_id))


@bp.post("/collections/<int:collection_id>/jobs")
def start_job_page(collection_id: int) -> BaseResponse:
    kind = request.form.get("kind", "")
    try:
        if kind not in JOB_KINDS_FROM_UI:
            raise Invalid("bad_kind", f"unknown job kind {kind!r}")
        job = submit_job(db(), kind=kind, collection_id=collection_id, params=request.form, user_id=current_user.id)
    except ServiceError as exc:
        _flash_error(exc)
        return redirect(url_for("dashboard.collection", collection_id=collection_id))
    flash(f"{kind.capitalize()} job {job.id} started.", "ok")
    return redirect(url_for("dashboard.collection", collection_id=collection_id))


@bp.post("/jobs/<int:job_id>/cancel")
def cancel_job_page(job_id: int) -> BaseResponse:
    job = cancel_job(db(), job_id)
    flash(f"Cancel requested for job {job.id}.", "ok")
    return redirect(url_for("dashboard.collection", collection_id=job.collection_id) if job.collection_id else url_for("dashboard.index"))


@bp.post("/collections/<int:collection_id>/bulk-accept")
def bulk_accept_page(collection_id: int) -> BaseResponse:
    try:
        category_id = parse_int(request.form.get("category_id", ""), "category_id")
        min_score = parse_float(request.form.get("min_score", ""), "min_score")
        count = bulk_accept(db(), collection_id, category_id, min_score, user_id=current_user.id).n_boxes
    except ValueError:
        flash("Choose a category and a numeric minimum score.", "error")
        return redirect(url_for("dashboard.collection", collection_id=collection_id))
    except ServiceError as exc:
        _flash_error(exc)
        return redirect(url_for("dashboard.collection", collection_id=collection_id))
    name = db().get(Category, category_id)
    flash(f"Accepted {count} box(es) of {name.name if name else category_id} scoring at least {min_score:g}.", "ok")
    return redirect(url_for("dashboard.collection", collection_id=collection_id))


@bp.post("/collections/<int:collection_id>/delete")
@admin_required
def delete_collection_page(collection_id: int) -> BaseResponse:
    """Delete a collection once its name was typed into ``confirm_name`` (anything else changes nothing)."""
    session = db()
    coll = get_collection(session, collection_id)
    if request.form.get("confirm_name", "") != coll.name:
        flash(f"Not deleted: type the collection's name ({coll.name}) to confirm.", "error")
        return redirect(url_for("dashboard.collection", collection_id=collection_id))
    name = coll.name
    delete_collection(session, blobs(), collection_id)
    flash(f"Collection {name} deleted.", "ok")
    return redirect(url_for("dashboard.index"))


@bp.post("/collections/<int:collection_id>/ground-truth")
@large_body
def ground_truth_page(collection_id: int) -> BaseResponse:
    """Import a ground-truth file (``web.services.ground_truth``); the outcome and every skipped file are flashed."""
    session = db()
    get_collection(session, collection_id)
    try:
        report = import_ground_truth_upload(session, Path(runtime().settings.data_dir), collection_id, request.files.get("file"),
                                            request.form.get("format"))
    except ServiceError as exc:
        _flash_error(exc)
        return redirect(url_for("dashboard.collection", collection_id=collection_id) + "#ground-truth")
    flash(report_summary(report), "ok")
    for line in report_issues(report):
        flash(line, "error")
    return redirect(url_for("dashboard.collection", collection_id=collection_id) + "#ground-truth")


# -- accounts --------------------------------------------------------------------------------
@bp.get("/account")
def account() -> str:
    return render_template("account.html", tokens=tokens_of(db(), current_user.id), new_token=None)


@bp.post("/account/tokens")
def create_token_page() -> str:
    session = db()
    _row, secret = create_token(session, current_user.id, (request.form.get("name") or "")[:200] or None)
    session.commit()
    return render_template("account.html", tokens=tokens_of(session, current_user.id), new_token=secret)


@bp.post("/account/password")
def change_password_page() -> BaseResponse:
    """Change your password; every session of the account ends, so log in again with the new one."""
    try:
        change_password(db(), current_user.id, request.form.get("current_password", ""), request.form.get("new_password", ""))
    except Forbidden:
        flash("The current password is wrong.", "error")
        return redirect(url_for("dashboard.account"))
    except Invalid as exc:
        flash(f"New password: {exc.reason}.", "error")
        return redirect(url_for("dashboard.account"))
    flash("Password changed; every session of this account was logged out. Log in with the new password.", "ok")
    return redirect(url_for("dashboard.login"))


@bp.post("/account/tokens/<int:token_id>/revoke")
def revoke_token_page(token_id: int) -> BaseResponse:
    revoke_token(db(), token_id, user_id=current_user.id)
    flash("Token revoked.", "ok")
    return redirect(url_for("dashboard.account"))


@bp.route("/users", methods=["GET", "POST"])
@admin_required
def users() -> BaseResponse | str:
    session = db()
    if request.method == "POST":
        try:
            add_user(session, request.form.get("email", ""), request.form.get("password", ""), admin=request.form.get("admin") == "on")
            flash("User created.", "ok")
        except Invalid as exc:
            flash(exc.message, "error")
        return redirect(url_for("dashboard.users"))
    return render_template("users.html", users=all_users(session))


# -- stored files --------------------------------------------------------------------------------
@bp.get("/blobs/<path:key>")
def blob(key: str) -> BaseResponse:
    """A stored file. Images get their image type; known downloads are attachments; anything else
    is ``application/octet-stream`` as an attachment. Never HTML, never script."""
    try:
        path = blobs().local_path(key)
    except BlobKeyError:
        abort(404)
    if not path.exists():
        abort(404)
    suffix = Path(key).suffix.lower()
    if suffix in CONTENT_TYPES:
        response = send_file(path, mimetype=CONTENT_TYPES[suffix], conditional=True, max_age=31536000)
        response.headers["Content-Disposition"] = "inline"
    else:
        response = send_file(path, mimetype=DOWNLOAD_TYPES.get(suffix, "application/octet-stream"), as_attachment=True,
                             download_name=Path(key).name, conditional=True)
    response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
