"""The browser side of the end-to-end tests: the ``camlabel run`` server they drive (:class:`Server`,
started by the ``server`` fixture), rows written straight into its database, page helpers
(dragging, waiting for a save), real photos and screenshots."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.processes import CAMLABEL

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
EMAIL, PASSWORD = "e2e@example.com", "e2e password 123"




@dataclass
class Server:
    url: str
    env: dict[str, str]
    database_url: str
    data_dir: Path
    process: subprocess.Popen


def camlabel(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([CAMLABEL, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def server_sessions(server: Server):  # type: ignore[no-untyped-def]
    from worker.store.db import make_engine, make_session_factory

    return make_session_factory(make_engine(server.database_url))


def box_center(page: Any, box: dict[str, float]) -> tuple[float, float, float]:
    """Page coordinates of a box's centre on ``#review-image`` and the display scale."""
    rect = page.eval_on_selector("#review-image", "el => { const r = el.getBoundingClientRect(); return [r.x, r.y, r.width, el.naturalWidth]; }")
    x, y, width, natural = rect
    scale = width / natural
    return x + (box["x1"] + box["x2"]) / 2 * scale, y + (box["y1"] + box["y2"]) / 2 * scale, scale


def drag(page: Any, start: tuple[float, float], delta: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(start[0] + delta[0] * step / 10, start[1] + delta[1] * step / 10)
    page.mouse.up()


def wait_saved(page: Any, text: str) -> None:
    try:
        page.wait_for_function("t => document.getElementById('save-state').textContent.includes(t)", arg=text, timeout=60000)
    except Exception as exc:
        shot(page, "failure")
        raise AssertionError(f"waited for {text!r}; the page says {page.text_content('#save-state')!r}; "
                             f"page errors: {getattr(page, 'camlabel_errors', None)} (test-artifacts/failure.png)") from exc


def make_collection(server: Server, name: str, images: list[dict[str, Any]]) -> tuple[int, dict[str, int], list[int], dict[str, int]]:
    """A collection with classes raccoon and kangaroo and the given images (as an import and an
    infer job write them): each ``{"photo": Path, "tag": str | None, "boxes": [(name, class,
    xyxy, score)]}``. Returns ``(collection_id, classes, image ids, box ids by name)``."""
    from PIL import Image as PILImage

    from worker.store.blobs import LocalBlobStore, file_sha256
    from worker.store.bulk import refresh_image_box_stats
    from worker.store.models import Box, BoxSource, Category, Collection, Image, ImageTag, ReviewStatus

    blobs = LocalBlobStore(server.data_dir / "blobs")
    with server_sessions(server)() as s:
        coll = Collection(name=name)
        s.add(coll)
        s.flush()
        cats = {}
        for cname in ("raccoon", "kangaroo"):
            cat = Category(collection_id=coll.id, name=cname)
            s.add(cat)
            s.flush()
            cats[cname] = cat.id
        ids, boxes = [], {}
        for spec in images:
            photo: Path = spec["photo"]
            with PILImage.open(photo) as opened:
                width, height = opened.size
            unique = hashlib.sha256(f"{file_sha256(photo)}:{len(ids)}".encode()).hexdigest()  # the dataset repeats some photos
            image = Image(collection_id=coll.id, sha256=unique, rel_path=f"{spec.get('tag') or 'loose'}/{photo.name}",
                          storage_key=blobs.put_file(photo, kind="images", suffix=".jpg"), width=width, height=height)
            s.add(image)
            s.flush()
            if spec.get("tag"):
                s.add(ImageTag(image_id=image.id, category_id=cats[spec["tag"]]))
            for box_name, cname, xyxy, score in spec.get("boxes", []):
                box = Box(image_id=image.id, category_id=cats[cname], x1=xyxy[0], y1=xyxy[1], x2=xyxy[2], y2=xyxy[3], score=score,
                          source=BoxSource.cam, status=ReviewStatus.proposed)
                s.add(box)
                s.flush()
                boxes[box_name] = box.id
            ids.append(image.id)
        s.flush()
        refresh_image_box_stats(s, ids)
        s.commit()
        return coll.id, cats, ids, boxes


def dev_photos(shared_dataset: Path, kind: str, n: int) -> list[Path]:
    return sorted((shared_dataset / kind / "images").glob("*.jpg"))[:n]


def docs_shot(page: Any, name: str, width: int = 900) -> Path:
    """A screenshot in ``test-artifacts/``, and a small copy (resized, 256 colours) in ``docs/``
    when that is missing or ``CAMLABEL_UPDATE_DOCS_SCREENSHOT=1`` (the docs are refreshed on request)."""
    from PIL import Image as PILImage

    path = shot(page, name)
    target = ROOT / "docs" / f"{name}.png"
    if target.exists() and os.environ.get("CAMLABEL_UPDATE_DOCS_SCREENSHOT") != "1":
        return target
    with PILImage.open(path) as img:
        img = img.convert("RGB")
        if img.width > width:
            img = img.resize((width, round(img.height * width / img.width)), PILImage.LANCZOS)
        buf = io.BytesIO()
        img.quantize(colors=256, method=PILImage.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
    target.write_bytes(buf.getvalue())
    return target
