"""Browser tests: the real ``camlabel run`` server (embedded worker, SQLite, tmp data dir) driven
by Playwright with Debian's Chromium. Screenshots of the main pages go to ``test-artifacts/``.

``test_review_edits_in_the_browser`` reviews rows inserted into the server's database;
``test_end_to_end_upload_train_infer_review_export`` runs the whole product: log in, create a
collection, upload real photos, train, infer, accept / move / draw / reject, export COCO.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import (
    ARTIFACTS,
    ROOT,
    Server,
    box_center,
    drag,
    server_sessions,
    shot,
    wait_saved,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# -- helpers that read the server's database directly -------------------------------------------------
def _boxes(server: Server, image_id: int) -> dict[int, Any]:
    from sqlalchemy import select

    from worker.store.models import Box

    with server_sessions(server)() as s:
        return {b.id: b for b in s.scalars(select(Box).where(Box.image_id == image_id))}


def _review_data(page: Any) -> dict[str, Any]:
    return json.loads(page.text_content("#review-data"))


def _open_image(page: Any, server: Server, image_id: int) -> dict[str, Any]:
    page.goto(f"{server.url}/review/images/{image_id}")
    page.wait_for_selector("body[data-ready='1']")
    return _review_data(page)


def _insert_review_rows(server: Server, photo: Path, name: str = "inserted-rows") -> tuple[int, int, dict[str, int]]:
    """A collection with one real photo and three proposed boxes (rows as an infer job writes them)."""
    from PIL import Image as PILImage

    from worker.store.blobs import LocalBlobStore, file_sha256
    from worker.store.bulk import refresh_image_box_stats
    from worker.store.models import Box, BoxSource, Category, Collection, Image, ReviewStatus

    blobs = LocalBlobStore(server.data_dir / "blobs")
    with PILImage.open(photo) as opened:
        width, height = opened.size
    with server_sessions(server)() as s:
        coll = Collection(name=name)
        s.add(coll)
        s.flush()
        cat = Category(collection_id=coll.id, name="raccoon")
        other = Category(collection_id=coll.id, name="kangaroo")
        s.add_all([cat, other])
        s.flush()
        image = Image(collection_id=coll.id, sha256=file_sha256(photo), rel_path=f"raccoon/{photo.name}",
                      storage_key=blobs.put_file(photo, kind="images", suffix=".jpg"), width=width, height=height)
        s.add(image)
        s.flush()
        names = {}
        for name, xyxy, score in (("accept", (20, 20, 150, 150), 0.9), ("move", (220, 40, 340, 160), 0.5), ("reject", (40, 230, 160, 330), 0.2)):
            box = Box(image_id=image.id, category_id=cat.id, x1=xyxy[0], y1=xyxy[1], x2=xyxy[2], y2=xyxy[3], score=score,
                      source=BoxSource.cam, status=ReviewStatus.proposed)
            s.add(box)
            s.flush()
            names[name] = box.id
        refresh_image_box_stats(s, [image.id])
        s.commit()
        return coll.id, image.id, names


def test_review_edits_in_the_browser(server: Server, page: Any, shared_dataset: Path) -> None:
    photo = shared_dataset / "raccoon" / "images" / "raccoon-1.jpg"  # 650 x 417
    collection_id, image_id, ids = _insert_review_rows(server, photo)

    page.goto(f"{server.url}/review/collections/{collection_id}")
    assert page.locator(".thumb rect.box").count() == 3
    shot(page, "review-grid")
    data = _open_image(page, server, image_id)
    assert {b["id"] for b in data["boxes"]} == set(ids.values())

    # accept one box with its button
    page.click(f"li[data-box-id='{ids['accept']}'] button.accept")
    wait_saved(page, f"Saved box #{ids['accept']} (accepted)")

    # move another by dragging it on the image
    move = next(b for b in data["boxes"] if b["id"] == ids["move"])
    cx, cy, scale = box_center(page, move)
    page.mouse.click(cx, cy)
    page.wait_for_selector(f"li[data-box-id='{ids['move']}'].selected")
    drag(page, (cx, cy), (40, 30))
    wait_saved(page, f"Saved box #{ids['move']} (edited)")
    page.keyboard.press("Escape")
    page.wait_for_selector("li.box-item.selected", state="detached")

    # reject one: select it in the list, press R
    page.click(f"li[data-box-id='{ids['reject']}'] .box-title")
    page.wait_for_selector(f"li[data-box-id='{ids['reject']}'].selected")
    page.keyboard.press("r")
    wait_saved(page, f"Saved box #{ids['reject']} (rejected)")

    # draw a new one: D, then drag on an empty part of the photo
    page.keyboard.press("d")
    x, y, _ = box_center(page, {"x1": 400, "y1": 250, "x2": 400, "y2": 250})
    drag(page, (x, y), (120 * scale, 90 * scale))
    wait_saved(page, "Added box #")
    page.keyboard.press("?")
    assert page.is_visible("#help")
    shot(page, "review-image-help")
    page.keyboard.press("Escape")
    shot(page, "review-image")

    boxes = _boxes(server, image_id)
    assert boxes[ids["accept"]].status.value == "accepted"
    moved = boxes[ids["move"]]
    assert moved.status.value == "edited"
    assert moved.x1 == pytest.approx(220 + 40 / scale, abs=3) and moved.y1 == pytest.approx(40 + 30 / scale, abs=3)
    assert moved.x2 - moved.x1 == pytest.approx(120, abs=2)
    assert boxes[ids["reject"]].status.value == "rejected"
    drawn = [b for b in boxes.values() if b.id not in ids.values()]
    assert len(drawn) == 1 and drawn[0].source.value == "human" and drawn[0].status.value == "accepted"
    assert drawn[0].x1 == pytest.approx(400, abs=3) and drawn[0].x2 == pytest.approx(520, abs=3)

    # a stale edit: someone else changes the box meanwhile -> visible conflict, nothing overwritten
    from sqlalchemy import update

    from worker.store.models import Box

    with server_sessions(server)() as s:
        s.execute(update(Box).where(Box.id == ids["accept"]).values(version=Box.version + 1, x1=30))
        s.commit()
    page.click(f"li[data-box-id='{ids['accept']}'] button.reject")
    page.wait_for_selector("#conflict:not([hidden])")
    assert "changed by someone else" in page.text_content("#conflict")
    shot(page, "review-conflict")
    after = _boxes(server, image_id)[ids["accept"]]
    assert after.status.value == "accepted" and after.x1 == 30
    assert page.get_attribute(f"li[data-box-id='{ids['accept']}']", "data-version") == str(after.version)


def test_editing_a_box_deleted_in_another_session_removes_it_and_says_so(server: Server, page: Any, shared_dataset: Path) -> None:
    photo = shared_dataset / "raccoon" / "images" / "raccoon-3.jpg"
    _collection_id, image_id, ids = _insert_review_rows(server, photo, name="deleted-meanwhile")
    _open_image(page, server, image_id)
    from sqlalchemy import delete

    from worker.store.models import Box

    with server_sessions(server)() as s:  # another reviewer deletes two boxes while this page is open
        s.execute(delete(Box).where(Box.id.in_([ids["accept"], ids["move"]])))
        s.commit()
    page.click(f"li[data-box-id='{ids['accept']}'] button.accept")
    page.wait_for_selector(f"li[data-box-id='{ids['accept']}']", state="detached")
    page.wait_for_selector("#conflict:not([hidden])")
    assert f"Box #{ids['accept']} was deleted by someone else" in page.text_content("#conflict")
    page.click(f"li[data-box-id='{ids['move']}'] button.delete")
    page.wait_for_selector(f"li[data-box-id='{ids['move']}']", state="detached")
    assert f"Box #{ids['move']} was deleted by someone else" in page.text_content("#conflict")
    assert page.locator("li.box-item").count() == 1  # only the box that still exists
    assert set(_boxes(server, image_id)) == {ids["reject"]}


def test_a_refresh_keeps_the_rows_it_does_not_change_so_no_click_is_lost(server: Server, page: Any, shared_dataset: Path) -> None:
    photo = shared_dataset / "raccoon" / "images" / "raccoon-4.jpg"
    _collection_id, image_id, ids = _insert_review_rows(server, photo, name="stable-rows")
    _open_image(page, server, image_id)
    untouched = page.query_selector(f"li[data-box-id='{ids['reject']}']")
    selected = page.query_selector(f"li[data-box-id='{ids['accept']}']")
    page.click(f"li[data-box-id='{ids['accept']}'] .box-title")  # selecting a box refreshes the list
    page.wait_for_selector(f"li[data-box-id='{ids['accept']}'].selected")
    # the row whose box did not change is the same element: a press on its buttons survives the refresh
    assert untouched.evaluate("el => el.isConnected")
    assert not selected.evaluate("el => el.isConnected")  # the selected row was redrawn
    assert page.locator("li.box-item").count() == 3
    assert [int(v) for v in page.eval_on_selector_all("li.box-item", "els => els.map(e => e.dataset.boxId)")] == sorted(ids.values())
    page.click(f"li[data-box-id='{ids['reject']}'] button.reject")
    wait_saved(page, f"Saved box #{ids['reject']} (rejected)")
    assert _boxes(server, image_id)[ids["reject"]].status.value == "rejected"


def test_shortcuts_are_remapped_in_the_help_overlay_and_kept(server: Server, page: Any, shared_dataset: Path) -> None:
    photo = shared_dataset / "raccoon" / "images" / "raccoon-2.jpg"
    _collection_id, image_id, ids = _insert_review_rows(server, photo, name="remapped-keys")
    _open_image(page, server, image_id)
    keys_of = "a => document.querySelector(`#shortcut-list dt[data-action='${a}']`).textContent"

    # remap "reject selected box" from R to X in the help overlay
    page.keyboard.press("?")
    assert page.is_visible("#help") and page.evaluate(keys_of, "reject") == "R"
    page.click("button.rebind[data-action='reject']")
    assert "Press the new key" in page.text_content("#keys-status")
    page.keyboard.press("x")
    assert page.evaluate(keys_of, "reject") == "X" and "X now" in page.text_content("#keys-status")
    page.keyboard.press("Escape")
    assert not page.is_visible("#help")

    # R does nothing any more; X rejects the selected box
    page.click(f"li[data-box-id='{ids['reject']}'] .box-title")
    page.wait_for_selector(f"li[data-box-id='{ids['reject']}'].selected")
    page.keyboard.press("r")
    page.wait_for_timeout(700)
    assert _boxes(server, image_id)[ids["reject"]].status.value == "proposed"
    page.keyboard.press("x")
    wait_saved(page, f"Saved box #{ids['reject']} (rejected)")
    assert _boxes(server, image_id)[ids["reject"]].status.value == "rejected"

    # kept across page loads; taking a key from another action moves it, with a message
    _open_image(page, server, image_id)
    page.keyboard.press("?")
    assert page.evaluate(keys_of, "reject") == "X"
    page.click("button.rebind[data-action='accept']")
    page.keyboard.press("x")
    assert page.evaluate(keys_of, "accept") == "X" and page.evaluate(keys_of, "reject") == "(none)"
    assert "no longer: “reject selected box”" in page.text_content("#keys-status")
    page.click("button.rebind[data-action='draw']")
    page.keyboard.press("Escape")  # cancels the capture, keeps the key
    assert page.evaluate(keys_of, "draw") == "D" and page.is_visible("#help")
    page.click("button.rebind[data-action='heatmap']")
    page.keyboard.press("m")
    assert page.text_content("[data-shortcut='heatmap']") == "(M)"  # the hint beside the toggle follows
    shot(page, "review-shortcuts")

    # reset: the defaults come back and nothing is stored any more
    page.click("#keys-reset")
    assert page.evaluate(keys_of, "reject") == "R" and page.evaluate(keys_of, "accept") == "E / Enter"
    assert page.evaluate("localStorage.getItem('camlabel.keys')") is None
    assert page.text_content("[data-shortcut='heatmap']") == "(H)"


def _wait_job_in_page(page: Any, kind: str, timeout_s: float) -> dict[str, Any]:
    """Wait for the newest job of ``kind`` on the collection page to finish (the JS poller updates the row)."""
    row = page.locator(f"tr.job:has(td:text-is('{kind}'))").first
    job_id = row.get_attribute("data-job-id")
    page.wait_for_function(
        "id => ['succeeded','failed','cancelled'].includes(document.querySelector(`tr.job[data-job-id='${id}']`).dataset.status)",
        arg=job_id, timeout=timeout_s * 1000)
    origin = page.url.split("/", 3)[:3]
    return page.request.get("/".join(origin) + f"/api/v1/jobs/{job_id}").json()


def test_end_to_end_upload_train_infer_review_export(server: Server, page: Any, shared_dataset: Path) -> None:
    photos = sorted((shared_dataset / "raccoon" / "images").glob("raccoon-1*.jpg"))[:6]
    photos_k = sorted((shared_dataset / "kangaroo" / "images").glob("0000*.jpg"))[:6]
    page.fill("#create-collection input[name=name]", "e2e")
    page.click("#create-collection button")
    page.wait_for_selector("#upload-form")
    shot(page, "collection-empty")
    collection_url = page.url
    for tag, files in (("raccoon", photos), ("kangaroo", photos_k)):
        page.set_input_files("#upload-form input[name=files]", [str(p) for p in files])
        page.fill("#upload-form input[name=tag]", tag)
        page.click("#upload-form button[type=submit]")
        page.wait_for_selector("text=import job")
        job = _wait_job_in_page(page, "import", 120)
        assert job["status"] == "succeeded", job
    page.select_option("#train-arch", os.environ.get("CAMLABEL_E2E_ARCH", "efficientnet_lite0"))
    page.click("#start-train")
    train = _wait_job_in_page(page, "train", 400)
    assert train["status"] == "succeeded", train
    page.click("#start-infer")
    page.wait_for_selector("text=Infer job")
    shot(page, "collection-jobs-running")
    infer = _wait_job_in_page(page, "infer", 400)
    assert infer["status"] == "succeeded", infer
    page.goto(collection_url)
    shot(page, "collection")

    collection_id = collection_url.rsplit("/", 1)[1]
    images = page.request.get(f"{server.url}/api/v1/collections/{collection_id}/images?limit=50&sort=id").json()["items"]
    with_boxes = [i for i in images if i["boxes"]]
    assert len(with_boxes) >= 3, "infer proposed boxes for too few images"
    page.goto(f"{server.url}/review/collections/{collection_id}")
    shot(page, "review-grid-e2e")

    # accept one box (image A), move one (image B), reject one (image C), draw one (image C)
    a, b, c = with_boxes[:3]
    _open_image(page, server, a["id"])
    page.click(f"li[data-box-id='{a['boxes'][0]['id']}'] button.accept")
    wait_saved(page, "(accepted)")

    data = _open_image(page, server, b["id"])
    target = data["boxes"][0]
    cx, cy, scale = box_center(page, target)
    page.click(f"li[data-box-id='{target['id']}'] .box-title")
    drag(page, (cx, cy), (-15, -10))
    wait_saved(page, "(edited)")
    moved = _boxes(server, b["id"])[target["id"]]

    data = _open_image(page, server, c["id"])
    page.click(f"li[data-box-id='{c['boxes'][0]['id']}'] .box-title")
    page.wait_for_selector(f"li[data-box-id='{c['boxes'][0]['id']}'].selected")
    page.keyboard.press("r")
    wait_saved(page, "(rejected)")
    page.keyboard.press("Escape")
    page.keyboard.press("d")
    w, h = data["image"]["width"], data["image"]["height"]
    x, y, scale = box_center(page, {"x1": w * 0.1, "y1": h * 0.1, "x2": w * 0.1, "y2": h * 0.1})
    drag(page, (x, y), (w * 0.3 * scale, h * 0.3 * scale))
    wait_saved(page, "Added box #")
    drawn = [bx for bx in _boxes(server, c["id"]).values() if bx.source.value == "human"]
    assert len(drawn) == 1
    page.keyboard.press("h")  # heatmap of the infer job's concept map
    page.wait_for_selector("canvas.heatmap[data-painted]:not([hidden])")
    shot(page, "review-image-heatmap")
    docs_shot = ROOT / "docs" / "review.png"  # the README's screenshot; refreshed on request, not on every run
    if not docs_shot.exists() or os.environ.get("CAMLABEL_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(ARTIFACTS / "review-image-heatmap.png", docs_shot)
    page.goto(f"{server.url}/review/collections/{collection_id}")
    page.check("#overlay-toggle")
    page.wait_for_selector(".thumb canvas.overlay[data-painted]")
    assert page.locator(".thumb canvas.overlay").first.is_visible()
    shot(page, "review-grid-heatmaps")

    # export from the collection page: COCO of accepted boxes holds exactly those edits
    page.goto(collection_url)
    page.check("#export-form input[name=include_unreviewed]")  # every image; the default holds the reviewed ones only
    with page.expect_download() as info:
        page.click("#download-export")
    coco = json.loads(Path(info.value.path()).read_text())
    by_file = {img["id"]: img["file_name"] for img in coco["images"]}
    assert len(coco["images"]) == len(photos) + len(photos_k)
    got = sorted((by_file[ann["image_id"]], [round(v) for v in ann["bbox"]]) for ann in coco["annotations"])
    accepted = a["boxes"][0]
    expected = sorted([
        (a["rel_path"], [round(accepted["x1"]), round(accepted["y1"]), round(accepted["x2"] - accepted["x1"]), round(accepted["y2"] - accepted["y1"])]),
        (b["rel_path"], [round(moved.x1), round(moved.y1), round(moved.x2 - moved.x1), round(moved.y2 - moved.y1)]),
        (c["rel_path"], [round(drawn[0].x1), round(drawn[0].y1), round(drawn[0].x2 - drawn[0].x1), round(drawn[0].y2 - drawn[0].y1)]),
    ])
    assert [g[0] for g in got] == [e[0] for e in expected]
    for (_, gb), (_, eb) in zip(got, expected, strict=True):
        assert all(abs(x - y) <= 1 for x, y in zip(gb, eb, strict=True)), (got, expected)
    assert moved.x1 != target["x1"]
