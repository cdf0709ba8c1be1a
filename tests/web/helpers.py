"""Helpers of the web tests (imported by conftest and tests): row factory, CSRF-aware login."""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from PIL import Image as PILImage

PASSWORD = "correct horse battery"
_PASSWORD_HASHES: dict[tuple[str, str], str] = {}  # (hash method, password) -> the hash Factory.user made for it first
_CSRF_RE = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


class Factory:
    """Rows for tests, written through the app's own session factory and blob store."""

    def __init__(self, app: Flask) -> None:
        self.runtime = app.extensions["camlabel"]

    def session(self):  # type: ignore[no-untyped-def]
        return self.runtime.sessions()

    def user(self, email: str = "reviewer@example.com", *, admin: bool = False, password: str = PASSWORD) -> int:
        """An active account. The first one with a given password and hash method in this process
        is made by ``create_user``; later ones are the same row with the hash it made (a real hash
        of that password: the web tests make hundreds of accounts). Logging in still checks the
        password against the hash."""
        from web.auth import create_user, password_hash_method
        from worker.store.models import Role, User

        with self.session() as s:
            key = (password_hash_method(), password)
            known = _PASSWORD_HASHES.get(key)
            if known is None:
                user = create_user(s, email, password, admin=admin)
                _PASSWORD_HASHES[key] = user.password_hash
            else:
                user = User(email=email, password_hash=known, role=Role.admin if admin else Role.reviewer, active=True)
                s.add(user)
            s.commit()
            return user.id

    def collection(self, name: str = "animals", categories: tuple[str, ...] = ("raccoon", "kangaroo")) -> tuple[int, dict[str, int]]:
        from worker.store.models import Category, Collection

        with self.session() as s:
            coll = Collection(name=name)
            s.add(coll)
            s.flush()
            cats = {}
            for cname in categories:
                cat = Category(collection_id=coll.id, name=cname)
                s.add(cat)
                s.flush()
                cats[cname] = cat.id
            s.commit()
            return coll.id, cats

    def png(self, width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
        buf = io.BytesIO()
        PILImage.new("RGB", (width, height), color).save(buf, format="PNG")
        return buf.getvalue()

    def image(self, collection_id: int, rel_path: str = "raccoon/a.png", *, width: int = 64, height: int = 48, status: str = "ok",
              failure_reason: str | None = None, seed: int = 0) -> int:
        import hashlib

        from worker.store.models import Image, ImageStatus

        data = self.png(width, height, color=(seed % 256, (seed // 256) % 256, 77))
        key = self.runtime.blobs.put_bytes(data, kind="images", suffix=".png")
        with self.session() as s:
            row = Image(collection_id=collection_id, sha256=hashlib.sha256(data + rel_path.encode()).hexdigest(), rel_path=rel_path,
                        storage_key=key if status == "ok" else None, thumb_key=None, width=width, height=height,
                        status=ImageStatus(status), failure_reason=failure_reason)
            s.add(row)
            s.commit()
            return row.id

    def box(self, image_id: int, category_id: int, *, score: float | None = 0.5, status: str = "proposed", source: str = "cam",
            xyxy: tuple[float, float, float, float] = (4, 4, 30, 30)) -> int:
        from worker.store.bulk import refresh_image_box_stats
        from worker.store.models import Box, BoxSource, ReviewStatus

        with self.session() as s:
            box = Box(image_id=image_id, category_id=category_id, x1=xyxy[0], y1=xyxy[1], x2=xyxy[2], y2=xyxy[3], score=score,
                      source=BoxSource(source), status=ReviewStatus(status))
            s.add(box)
            s.flush()
            refresh_image_box_stats(s, [image_id])
            s.commit()
            return box.id

    def concept_map(self, image_id: int, category_id: int, values: Any = None, *, with_png: bool = False) -> str:
        """A concept map row of a fresh model version; returns its raw map key. ``values``: the
        map (``float[h, w]``; default a 4x6 ramp, hottest at the bottom right); ``with_png``:
        the row also has a stored overlay PNG (a red 64x48 image)."""
        import numpy as np

        from worker.store.models import ConceptMap, ModelVersion

        cam = np.asarray(values if values is not None else np.arange(24, dtype=np.float32).reshape(4, 6), dtype=np.float16)
        buf = io.BytesIO()
        np.save(buf, cam, allow_pickle=False)
        raw = self.runtime.blobs.put_bytes(buf.getvalue(), kind="maps", suffix=".npy")
        png = self.runtime.blobs.put_bytes(self.png(64, 48, (255, 0, 0)), kind="overlays", suffix=".png") if with_png else None
        with self.session() as s:
            mv = ModelVersion(name="m", arch="tiny", spec={}, class_names=["raccoon", "kangaroo"])
            s.add(mv)
            s.flush()
            s.add(ConceptMap(image_id=image_id, category_id=category_id, model_version_id=mv.id, raw_key=raw, overlay_key=png))
            s.commit()
        return raw

    def get(self, model: type, ident: int) -> Any:
        with self.session() as s:
            return s.get(model, ident)


@dataclass
class Browser:
    """A test client that logged in through the real form and sends the CSRF token like the JS does."""

    client: FlaskClient
    csrf: str

    def api(self, method: str, url: str, json: Any = None, **kwargs: Any):  # type: ignore[no-untyped-def]
        headers = {"X-CSRFToken": self.csrf, "Accept": "application/json", **kwargs.pop("headers", {})}
        return self.client.open(url, method=method, json=json, headers=headers, **kwargs)

    def form(self, url: str, data: dict[str, Any], **kwargs: Any):  # type: ignore[no-untyped-def]
        return self.client.post(url, data={"csrf_token": self.csrf, **data}, **kwargs)


def csrf_from(html: str) -> str:
    match = _CSRF_RE.search(html)
    assert match, "page has no csrf-token meta tag"
    return match.group(1)


def login(client: FlaskClient, email: str, password: str = PASSWORD) -> Browser:
    """Log in through ``/login`` with the form's CSRF token; returns a :class:`Browser`."""
    page = client.get("/login")
    token = csrf_from(page.get_data(as_text=True))
    response = client.post("/login", data={"email": email, "password": password, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    home = client.get("/")
    assert home.status_code == 200
    return Browser(client=client, csrf=csrf_from(home.get_data(as_text=True)))


def wait_job(browser: Browser, job_id: int, timeout_s: float = 120) -> dict:
    """Poll ``/api/v1/jobs/<id>`` until the job has finished; its JSON."""
    deadline = time.monotonic() + timeout_s
    job: dict = {}
    while time.monotonic() < deadline:
        job = browser.api("GET", f"/api/v1/jobs/{job_id}").get_json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")
