"""Browser tests of the review UI, driven as a reviewer would (Chromium through Playwright on the
real ``camlabel run`` server of the ``server`` fixture): triage from the grid, the keyboard loop on one
image, knowing where you are, and access (narrow screens, contrast, labels, focus).

Screenshots of the new views go to ``docs/`` (small PNGs) and ``test-artifacts/``."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import (
    ARTIFACTS,
    EMAIL,
    PASSWORD,
    Server,
    box_center,
    dev_photos,
    docs_shot,
    drag,
    make_collection,
    server_sessions,
    shot,
    wait_saved,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DATASET_PHOTOS = ("raccoon", "kangaroo")


# -- rows --------------------------------------------------------------------------------------
def _box(server: Server, box_id: int) -> Any:
    from worker.store.models import Box

    with server_sessions(server)() as s:
        return s.get(Box, box_id)


def _image_boxes(server: Server, image_id: int) -> list[Any]:
    from sqlalchemy import select

    from worker.store.models import Box

    with server_sessions(server)() as s:
        return list(s.scalars(select(Box).where(Box.image_id == image_id).order_by(Box.id)))


def _counts_loaded(page: Any) -> None:
    """Wait for the counts the page fills in after it is shown (progress line, grid total)."""
    page.wait_for_selector("#review-progress[data-loaded='1']")
    if page.locator("#page-info").count():
        page.wait_for_selector("#page-info[data-loaded='1']")


def _selected(page: Any) -> str:
    return page.text_content("#selection-count")


def _thumb_ids(page: Any) -> list[int]:
    return [int(i) for i in page.eval_on_selector_all(".thumb", "els => els.map(e => e.dataset.imageId)")]


# -- 1: triage from the grid -------------------------------------------------------------------
def test_grid_triage_selection_bulk_accept_with_preview_and_undo(server: Server, page: Any, shared_dataset: Path) -> None:
    scores = [0.95, 0.92, 0.7, 0.5, 0.3, 0.1]
    specs = [{"photo": p, "tag": "raccoon", "boxes": [(f"r{n}", "raccoon", (20, 20, 200, 200), s)]}
             for n, (p, s) in enumerate(zip(dev_photos(shared_dataset, "raccoon", 6), scores, strict=True))]
    kangaroos = dev_photos(shared_dataset, "kangaroo", 2)
    specs.append({"photo": kangaroos[0], "tag": "kangaroo", "boxes": [("wrong", "raccoon", (10, 10, 120, 120), 0.8)]})
    specs.append({"photo": kangaroos[1], "tag": "kangaroo", "boxes": []})
    cid, cats, ids, boxes = make_collection(server, "triage", specs)
    grid_url = f"{server.url}/review/collections/{cid}"
    page.goto(grid_url)
    page.wait_for_selector("body[data-ready='1']")
    order = _thumb_ids(page)  # lowest box score first, the image with no box last
    assert order[:6] == [ids[5], ids[4], ids[3], ids[2], ids[6], ids[1]] and order[-1] == ids[7]

    # select: click one box, Shift-click another (a range), arrows + Space, Ctrl-click a thumbnail
    page.click(f".thumb[data-image-id='{order[0]}'] input.pick")
    assert _selected(page) == "1 selected"
    page.click(f".thumb[data-image-id='{order[2]}'] input.pick", modifiers=["Shift"])
    assert _selected(page) == "3 selected" and page.locator(".thumb.selected").count() == 3
    page.focus(f".thumb[data-image-id='{order[0]}'] a.open")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.closest('.thumb').dataset.imageId") == str(order[3])
    page.keyboard.press("Space")
    assert _selected(page) == "4 selected"
    page.click(f".thumb[data-image-id='{order[4]}'] a.open", modifiers=["Control"])
    assert _selected(page) == "5 selected" and "/review/collections/" in page.url  # Ctrl-click selects, does not open
    page.keyboard.press("Escape")
    assert _selected(page) == "0 selected" and page.is_disabled("#reject-selection")
    page.focus(f".thumb[data-image-id='{order[5]}'] input.pick")  # Space on a focused box ticks it once
    page.keyboard.press("Space")
    assert _selected(page) == "1 selected" and page.is_checked(f".thumb[data-image-id='{order[5]}'] input.pick")
    page.keyboard.press("Escape")
    assert _selected(page) == "0 selected"

    # reject two, then undo that as one action
    page.click(f".thumb[data-image-id='{order[0]}'] input.pick")
    page.click(f".thumb[data-image-id='{order[1]}'] input.pick")
    page.click("#reject-selection")
    page.wait_for_selector("#op-status:not([hidden])")
    assert "Rejected 2 box(es) on 2 image(s)." in page.text_content("#op-text")
    assert _box(server, boxes["r5"]).status.value == "rejected" and _box(server, boxes["r4"]).status.value == "rejected"
    page.click("#op-undo")
    page.wait_for_function("() => document.getElementById('op-text').textContent.startsWith('Undone')")
    assert "Undone: 2 box(es) restored." in page.text_content("#op-text")
    assert _box(server, boxes["r5"]).status.value == "proposed" and _box(server, boxes["r4"]).status.value == "proposed"

    # bulk accept by score: the preview says how many and shows them before anything is written
    page.click("#bulk-open")
    assert page.evaluate("document.getElementById('bulk-dialog').open")
    page.select_option("#bulk-category", str(cats["raccoon"]))
    page.fill("#bulk-min-score", "0.9")
    page.click("#bulk-preview")
    page.wait_for_function("() => document.getElementById('bulk-summary').textContent.length > 0")
    summary = page.text_content("#bulk-summary")
    assert summary.startswith("2 box(es) on 2 image(s) will be accepted. Their scores expect about 2 of them (94%) to be right.")
    assert "None of this class's boxes at this score has been reviewed box by box yet" in summary
    assert page.locator("#bulk-samples img").count() == 2 and page.text_content("#bulk-apply") == "Accept 2 box(es)"
    assert _box(server, boxes["r0"]).status.value == "proposed"
    docs_shot(page, "review-grid-bulk-preview")
    page.click("#bulk-apply")
    page.wait_for_function("() => document.getElementById('op-text').textContent.startsWith('Accepted')")
    assert "Accepted 2 box(es) of raccoon scoring at least 0.9." in page.text_content("#op-text")
    assert [_box(server, boxes[k]).status.value for k in ("r0", "r1", "r2")] == ["accepted", "accepted", "proposed"]
    page.click("#op-undo")
    page.wait_for_function("() => document.getElementById('op-text').textContent.startsWith('Undone')")
    assert [_box(server, boxes[k]).status.value for k in ("r0", "r1")] == ["proposed", "proposed"]

    # sort by the box score, highest first; filters for disagreeing tags and for no box
    page.select_option("select[name=sort]", "-score")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("body[data-ready='1']")
    assert _thumb_ids(page)[:3] == [ids[0], ids[1], ids[6]]
    assert page.text_content(f".thumb[data-image-id='{ids[0]}'] .score") == "0.95"
    page.check("input[name=disagree]")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("body[data-ready='1']")
    assert _thumb_ids(page) == [ids[6], ids[7]]  # a raccoon box on a kangaroo photo; a kangaroo photo with no box
    page.uncheck("input[name=disagree]")
    page.check("input[name=no_box]")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("body[data-ready='1']")
    assert _thumb_ids(page) == [ids[7]]

    # per-class counts of reviewed, accepted, rejected
    page.goto(grid_url)
    page.click("#class-counts summary")
    row = page.locator(f"#class-table tr[data-category-id='{cats['raccoon']}']")
    row.wait_for()
    assert [c.strip() for c in row.locator("th, td").all_text_contents()] == ["raccoon", "7", "0", "0", "0", "0"]
    docs_shot(page, "review-grid-triage")


# -- 2: the keyboard loop on one image ---------------------------------------------------------------
def test_image_keyboard_loop_labels_classes_undo_zoom_draw_and_help(server: Server, page: Any, shared_dataset: Path) -> None:
    photos = dev_photos(shared_dataset, "kangaroo", 5)[2:5]
    specs = [{"photo": photos[0], "tag": "kangaroo", "boxes": [("b1", "raccoon", (20, 20, 120, 100), 0.8), ("b2", "kangaroo", (150, 40, 260, 180), 0.6)]},
             {"photo": photos[1], "tag": "kangaroo", "boxes": [("n1", "kangaroo", (30, 30, 90, 90), 0.5)]},
             {"photo": photos[2], "tag": "kangaroo", "boxes": [("n2", "kangaroo", (30, 30, 90, 90), 0.4)]}]
    cid, cats, ids, boxes = make_collection(server, "keyboard", specs)
    b1, b2 = boxes["b1"], boxes["b2"]
    page.goto(f"{server.url}/review/images/{ids[0]}?sort=id")
    page.wait_for_selector("body[data-ready='1']")

    # each box shows its class and score; the photo is scaled to fit the stage
    assert page.locator(".box-label").all_text_contents() == ["raccoon 0.80", "kangaroo 0.60"]
    fit = page.evaluate("""() => { const img = document.getElementById('review-image'), c = document.getElementById('canvas');
        const r = img.getBoundingClientRect(); return [r.width, c.clientWidth, r.bottom, innerHeight, img.naturalWidth]; }""")
    assert abs(fit[0] - fit[1]) <= 2 or abs(fit[2] - (fit[3] - 16)) <= 2, fit
    assert page.evaluate("document.activeElement.id") == "canvas"

    def selected_box() -> int | None:
        found = page.eval_on_selector_all("li.box-item.selected", "els => els.map(e => e.dataset.boxId)")
        return int(found[0]) if found else None

    def selected_after_key(expected: int) -> int | None:
        """The selected box once the key's handler has run (waits up to 5 s for ``expected``)."""
        with contextlib.suppress(Exception):
            page.wait_for_function("id => document.querySelector('li.box-item.selected')?.dataset.boxId === String(id)",
                                   arg=expected, timeout=5000)
        return selected_box()

    # Tab / Shift+Tab and the arrow keys step through the boxes
    page.keyboard.press("Tab")
    assert selected_after_key(b1) == b1
    page.keyboard.press("Tab")
    assert selected_after_key(b2) == b2
    page.keyboard.press("Shift+Tab")
    assert selected_after_key(b1) == b1
    page.keyboard.press("ArrowDown")
    assert selected_after_key(b2) == b2
    page.keyboard.press("ArrowUp")
    assert selected_after_key(b1) == b1

    # number keys set the class; E accepts; Delete deletes
    page.keyboard.press("2")
    wait_saved(page, f"Saved box #{b1} (edited)")
    assert _box(server, b1).category_id == cats["kangaroo"]
    assert page.locator(f".box-label[data-box-id='{b1}']").text_content() == "kangaroo 0.80"
    page.keyboard.press("e")
    wait_saved(page, f"Saved box #{b1} (accepted)")
    page.keyboard.press("Delete")
    wait_saved(page, f"Deleted box #{b1}.")
    assert _box(server, b1) is None

    # undo: the delete (the box comes back), the accept, the class change; redo with Ctrl+Shift+Z and Y
    page.keyboard.press("z")
    wait_saved(page, "Undone: delete")
    back = [b for b in _image_boxes(server, ids[0]) if b.id != b2]
    assert len(back) == 1 and back[0].category_id == cats["kangaroo"] and back[0].status.value == "accepted"
    assert (back[0].x1, back[0].y1, back[0].x2, back[0].y2) == pytest.approx((20, 20, 120, 100), abs=0.5)
    restored = back[0].id
    page.keyboard.press("z")
    wait_saved(page, "Undone: accepted")
    assert _box(server, restored).status.value == "edited"
    page.keyboard.press("Control+z")
    wait_saved(page, "Undone: class change")
    assert _box(server, restored).category_id == cats["raccoon"] and _box(server, restored).status.value == "proposed"
    page.keyboard.press("Control+Shift+z")
    wait_saved(page, "Redone: class change")
    assert _box(server, restored).category_id == cats["kangaroo"]
    # the history is kept for this image: after a reload, Y still redoes the accept
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert not page.is_disabled("#redo")
    page.keyboard.press("y")
    wait_saved(page, "Redone: accepted")
    assert _box(server, restored).status.value == "accepted"

    # zoom with + / 0 and the wheel
    width = lambda: page.evaluate("document.getElementById('review-image').getBoundingClientRect().width")  # noqa: E731
    fitted = width()
    page.keyboard.press("+")
    assert width() == pytest.approx(fitted * 1.25, abs=2)
    page.keyboard.press("0")
    assert width() == pytest.approx(fitted, abs=2)
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -200)
    page.wait_for_function("w => document.getElementById('review-image').getBoundingClientRect().width > w + 5", arg=fitted)
    page.keyboard.press("0")

    # drawing: new boxes take the image's tag (kangaroo, though raccoon comes first), stay
    # selected, and draw mode stays on when asked
    assert page.input_value("#new-category") == str(cats["kangaroo"])
    page.check("#keep-drawing")
    page.focus("#canvas")
    page.keyboard.press("Escape")
    page.keyboard.press("d")
    for n, (x, y) in enumerate(((280, 200), (360, 200))):  # on the 460 x 288 photo, clear of the other boxes
        cx, cy, scale = box_center(page, {"x1": x, "y1": y, "x2": x, "y2": y})
        drag(page, (cx, cy), (60 * scale, 50 * scale))
        page.wait_for_function("n => document.querySelectorAll('li.box-item').length === n", arg=3 + n)
    drawn = [b for b in _image_boxes(server, ids[0]) if b.source.value == "human" and b.id != restored]
    assert len(drawn) == 2 and {b.category_id for b in drawn} == {cats["kangaroo"]}
    assert selected_box() == drawn[-1].id and page.get_attribute("#draw-toggle", "aria-pressed") == "true"
    page.keyboard.press("Escape")
    assert page.get_attribute("#draw-toggle", "aria-pressed") == "false"

    # focus stays where the user was after a save
    page.click(f"li[data-box-id='{b2}'] button.accept")
    wait_saved(page, f"Saved box #{b2} (accepted)")
    assert page.evaluate("[document.activeElement.className, document.activeElement.closest('li').dataset.boxId]") == ["accept", str(b2)]
    docs_shot(page, "review-image-keyboard")

    # the help is a modal dialog: Tab stays inside it
    page.keyboard.press("?")
    assert page.evaluate("document.getElementById('help').open && document.getElementById('help').matches(':modal')")
    for _ in range(30):
        page.keyboard.press("Tab")
        assert page.evaluate("document.getElementById('help').contains(document.activeElement)")
    # "accept all & next" is in the remappable map: give it G, then G accepts all and moves on
    page.click("button.rebind[data-action='acceptAllNext']")
    page.keyboard.press("g")
    page.keyboard.press("Escape")
    assert not page.evaluate("document.getElementById('help').open")
    page.keyboard.press("g")
    page.wait_for_url(re.compile(rf"/review/images/{ids[1]}\b"))
    page.wait_for_selector("body[data-ready='1']")
    assert _box(server, b2).status.value == "accepted"
    page.evaluate("localStorage.removeItem('camlabel.keys')")


# -- 4: where you are ----------------------------------------------------------------------------
def test_counts_remembered_grid_page_queue_history_and_prefetch(server: Server, page: Any, shared_dataset: Path) -> None:
    photos = dev_photos(shared_dataset, "raccoon", 60)[10:60]  # 50 images: two grid pages of 48
    specs = [{"photo": p, "tag": "raccoon", "boxes": [(f"b{n}", "raccoon", (10, 10, 100, 100), round(0.2 + n / 100, 2))]}
             for n, p in enumerate(photos)]
    cid, _cats, ids, boxes = make_collection(server, "where", specs)
    grid_url = f"{server.url}/review/collections/{cid}?review=unreviewed"
    page.goto(grid_url)
    page.wait_for_selector("body[data-ready='1']")
    _counts_loaded(page)
    assert " ".join(page.text_content("#page-info").split()) == "Page 1 of 2 · 50 images"
    assert page.text_content("#count-to-review").strip() == "50 to review"
    page.click("#next-page")
    page.wait_for_selector("body[data-ready='1']")
    _counts_loaded(page)
    assert " ".join(page.text_content("#page-info").split()) == "Page 2 of 2 · 50 images"
    second_page = page.url
    opened = _thumb_ids(page)[1]
    page.click(f".thumb[data-image-id='{opened}'] a.open")
    page.wait_for_selector("body[data-ready='1']")
    _counts_loaded(page)
    assert "50 to review" in " ".join(page.text_content("#review-progress").split())
    page.click("#grid-link")  # back to the page, sort and filter the grid was left at
    page.wait_for_selector("body[data-ready='1']")
    _counts_loaded(page)
    assert page.url == second_page and " ".join(page.text_content("#page-info").split()) == "Page 2 of 2 · 50 images"
    assert page.evaluate("document.activeElement.closest('.thumb').dataset.imageId") == str(opened)
    page.fill("#goto-form input[name=goto]", "1")
    page.click("#goto-form button")
    page.wait_for_selector("body[data-ready='1']")
    _counts_loaded(page)
    assert page.text_content("#page-info").strip().startswith("Page 1 of 2")

    # the queue keeps its history: accept all + next, then K goes back to the image just reviewed
    first, second = _thumb_ids(page)[:2]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.click(f".thumb[data-image-id='{first}'] a.open")
    page.wait_for_selector("body[data-ready='1']")
    next_src = page.evaluate("JSON.parse(document.getElementById('review-data').textContent).next_src")
    assert next_src
    page.wait_for_function("src => performance.getEntriesByType('resource').some(e => e.name.endsWith(src))", arg=next_src)
    assert any(u.endswith(next_src) for u in requests)  # the next photo is fetched before J
    page.keyboard.press("Space")
    page.wait_for_url(re.compile(rf"/review/images/{second}\?"))
    page.wait_for_selector("body[data-ready='1']")
    _counts_loaded(page)
    assert _box(server, boxes["b0"]).status.value == "accepted"
    assert "49 to review" in " ".join(page.text_content("#review-progress").split())
    page.keyboard.press("k")
    page.wait_for_url(re.compile(rf"/review/images/{first}\?"))
    page.wait_for_selector("body[data-ready='1']")
    page.keyboard.press("j")
    page.wait_for_url(re.compile(rf"/review/images/{second}\?"))
    docs_shot(page, "review-image-queue")


# -- 6: access ----------------------------------------------------------------------------------
CONTRAST_JS = """() => {
  function rgb(s) { const m = s.match(/[\\d.]+/g) || []; return m.map(Number); }
  function lum(c) { const v = c.slice(0, 3).map(x => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; }
  function background(el) {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c;
    }
    return [255, 255, 255];
  }
  const bad = [];
  document.querySelectorAll('body *').forEach(el => {
    const own = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.closest('[hidden], dialog:not([open]), .sr-only') || el.disabled || el.closest(':disabled')) return;
    const r = el.getBoundingClientRect();
    if (!r.width || !r.height || getComputedStyle(el).visibility === 'hidden') return;
    const fg = lum(rgb(getComputedStyle(el).color)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    if (ratio < 4.5) bad.push([el.tagName, el.className, el.textContent.trim().slice(0, 30), ratio.toFixed(2)]);
  });
  return bad;
}"""

UNLABELLED_JS = """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby') && !el.title)
  .map(el => el.outerHTML.slice(0, 80))"""


def test_access_narrow_screens_contrast_labels_focus_and_login(server: Server, browser: Any, page: Any, shared_dataset: Path) -> None:
    photos = dev_photos(shared_dataset, "raccoon", 3)
    specs = [{"photo": p, "tag": "raccoon", "boxes": [(f"a{n}", "raccoon", (10, 10, 150, 120), 0.5 + n / 10)]} for n, p in enumerate(photos)]
    cid, _cats, ids, _boxes = make_collection(server, "a-rather-long-collection-name-for-narrow-screens", specs)
    pages = ["/", f"/collections/{cid}", f"/review/collections/{cid}", f"/review/images/{ids[0]}"]
    for width, height in ((390, 844), (768, 1024)):
        page.set_viewport_size({"width": width, "height": height})
        for path in pages:
            page.goto(server.url + path)
            page.wait_for_load_state("load")
            if "/review/" in path:
                page.wait_for_selector("body[data-ready='1']")
            overflow = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
            assert overflow[0] <= overflow[1], (width, path, overflow)
            if width == 390 and path == f"/review/images/{ids[0]}":
                docs_shot(page, "review-image-390px", width=390)
    page.set_viewport_size({"width": 1400, "height": 950})
    for path in pages:
        page.goto(server.url + path)
        if "/review/" in path:
            page.wait_for_selector("body[data-ready='1']")
        assert page.evaluate(CONTRAST_JS) == [], path
        assert page.evaluate(UNLABELLED_JS) == [], path
    # visible focus: every control Tab reaches on the grid draws an outline
    page.goto(f"{server.url}/review/collections/{cid}")
    page.wait_for_selector("body[data-ready='1']")
    page.evaluate("document.activeElement.blur()")
    seen = set()
    for _ in range(25):
        page.keyboard.press("Tab")
        tag, outline, width_px = page.evaluate("""() => { const s = getComputedStyle(document.activeElement);
            return [document.activeElement.tagName + '#' + document.activeElement.id, s.outlineStyle, parseFloat(s.outlineWidth)]; }""")
        assert outline != "none" and width_px >= 2, tag
        seen.add(tag)
    assert len(seen) >= 6  # links, filter fields, buttons, thumbnails and their boxes

    # a failed login keeps the email
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        login = context.new_page()
        login.goto(server.url + "/login")
        login.fill("input[name=email]", EMAIL)
        login.fill("input[name=password]", PASSWORD + " wrong")
        login.click("#login-form button[type=submit]")
        login.wait_for_selector(".flash-error")
        assert login.input_value("input[name=email]") == EMAIL and login.input_value("input[name=password]") == ""
        assert login.evaluate("document.activeElement.name") == "password"
        assert login.evaluate("[document.documentElement.scrollWidth, innerWidth]")[0] <= 390
        assert login.evaluate(CONTRAST_JS) == [] and login.evaluate(UNLABELLED_JS) == []
    finally:
        context.close()
    assert ARTIFACTS.exists()


# -- heatmaps ----------------------------------------------------------------------------------
def _grey_photo(tmp_path: Path) -> Path:
    from PIL import Image as PILImage

    path = tmp_path / "grey.jpg"
    PILImage.new("RGB", (640, 480), (128, 128, 128)).save(path, quality=95)
    return path


def _concept_map(server: Server, image_id: int, category_id: int, cam: Any) -> None:
    """A concept map row and its float16 blob, as the infer job writes them (no overlay PNG)."""
    from camcore.concept_maps import encode_map
    from worker.store.blobs import LocalBlobStore
    from worker.store.models import ConceptMap, ModelVersion

    key = LocalBlobStore(server.data_dir / "blobs").put_bytes(encode_map(cam), kind="maps", suffix=".npy")
    with server_sessions(server)() as s:
        version = ModelVersion(name="heat", arch="tiny", spec={}, class_names=["raccoon", "kangaroo"])
        s.add(version)
        s.flush()
        s.add(ConceptMap(image_id=image_id, category_id=category_id, model_version_id=version.id, raw_key=key))
        s.commit()


def _rgb_at(page: Any, selector: str, fx: float, fy: float) -> tuple[int, int, int]:
    """The colour on screen at fraction (fx, fy) of the element's box (a 5x5 px average)."""
    from PIL import Image as PILImage

    box = page.locator(selector).first.bounding_box()
    x, y = box["x"] + fx * box["width"], box["y"] + fy * box["height"]
    shot_bytes = page.screenshot(clip={"x": x - 2, "y": y - 2, "width": 5, "height": 5})
    import numpy as np

    with PILImage.open(io.BytesIO(shot_bytes)) as img:
        mean = np.asarray(img.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return tuple(int(round(v)) for v in mean)  # type: ignore[return-value]


CANVAS_JS = """sel => { const c = document.querySelector(sel);
    return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]; }"""


def test_heatmap_is_painted_from_the_concept_map_over_the_photo(server: Server, page: Any, tmp_path: Path) -> None:
    """The review pages colour the stored float16 map in the browser: the same Turbo colours and
    alpha as the PNG rendering (camcore.concept_maps.render_heatmap_png), warm where the map is
    hot, blue where it is cold, over the photo at the chosen opacity, toggled by H / the checkbox."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    from camcore.concept_maps import TURBO_LUT, overlay_size, render_heatmap_png

    cid, cats, ids, _boxes = make_collection(server, "heatmaps", [{"photo": _grey_photo(tmp_path), "tag": "raccoon"}])
    ramp = torch.arange(8.0)
    cam = (ramp[:, None] + ramp[None, :]) * 0.37 - 1.0  # 8x8: coldest top left, hottest bottom right
    _concept_map(server, ids[0], cats["raccoon"], cam)

    page.camlabel_errors.clear()  # (the login page's own requests)
    page.goto(f"{server.url}/review/images/{ids[0]}")
    page.wait_for_selector("body[data-ready='1']")
    assert page.evaluate("Array.from(window.camlabel.heatmap.lut)") == TURBO_LUT.ravel().tolist()
    assert page.locator("canvas.heatmap").is_hidden()
    off = {corner: _rgb_at(page, "#review-image", *corner) for corner in ((0.03, 0.03), (0.3, 0.3), (0.97, 0.97))}
    assert all(abs(c - 128) <= 4 for rgb in off.values() for c in rgb), off  # the grey photo alone

    page.keyboard.press("h")
    page.wait_for_selector("canvas.heatmap[data-painted]:not([hidden])")
    width, height, data = page.evaluate(CANVAS_JS, "canvas.heatmap")
    assert (width, height) == overlay_size((640, 480)) == (96, 72)
    painted = np.array(data, dtype=np.int16).reshape(height, width, 4)
    with PILImage.open(io.BytesIO(render_heatmap_png(cam, (width, height), opacity=1.0))) as png:
        expected = np.array(png.convert("RGBA"), dtype=np.int16)
    assert np.abs(painted[..., 3] - expected[..., 3]).max() <= 2  # alpha = the normalised value
    opaque = expected[..., 3] >= 128
    assert np.abs(painted[..., :3] - expected[..., :3])[opaque].max() <= 12
    hot, cold = painted[67, 90], painted[13, 18]  # map cells (7, 7) and (1, 1)
    assert hot[0] > 120 and hot[0] > hot[1] + 100 and hot[0] > hot[2] + 100, hot  # red
    assert cold[2] > 200 and cold[2] > cold[0] + 100 and cold[2] > cold[1] + 80, cold  # blue

    # over the photo at the slider's opacity: warm at the hot corner, bluer where cool, the coldest corner clear
    half = {corner: _rgb_at(page, "#review-image", *corner) for corner in off}
    page.evaluate("() => { const s = document.getElementById('heatmap-opacity'); s.value = '1'; s.dispatchEvent(new Event('input')); }")
    full = {corner: _rgb_at(page, "#review-image", *corner) for corner in off}
    r, g, b = full[(0.97, 0.97)]
    assert r > g + 80 and r > b + 80, full
    assert full[(0.3, 0.3)][2] > full[(0.3, 0.3)][0] + 40, full
    assert all(abs(c - 128) <= 6 for c in full[(0.03, 0.03)]), full
    for corner in ((0.97, 0.97), (0.3, 0.3)):  # half the opacity moves the colour half as far from the photo
        for channel in range(3):
            shift_full, shift_half = full[corner][channel] - 128, half[corner][channel] - 128
            assert abs(shift_half - shift_full / 2) <= 6 + abs(shift_full) * 0.1, (corner, half, full)
    page.keyboard.press("h")
    page.wait_for_selector("canvas.heatmap[hidden]", state="attached")
    assert _rgb_at(page, "#review-image", 0.97, 0.97) == pytest.approx(off[(0.97, 0.97)], abs=4)
    page.click("#heatmap-toggle")
    page.wait_for_selector("canvas.heatmap:not([hidden])")
    shot(page, "review-image-heatmap-painted")

    # the grid paints the same map on the thumbnail when "concept maps" is on
    page.goto(f"{server.url}/review/collections/{cid}")
    page.wait_for_selector("body[data-ready='1']")
    thumb = f".thumb[data-image-id='{ids[0]}'] .frame"
    assert page.locator(f"{thumb} canvas.overlay").is_hidden()
    page.check("#overlay-toggle")
    page.wait_for_selector(f"{thumb} canvas.overlay[data-painted]")
    assert page.locator(f"{thumb} canvas.overlay").is_visible()
    _w, _h, grid_data = page.evaluate(CANVAS_JS, f"{thumb} canvas.overlay")
    assert grid_data == data
    r, g, b = _rgb_at(page, thumb, 0.97, 0.97)
    assert r > g + 40 and r > b + 40, (r, g, b)
    page.uncheck("#overlay-toggle")
    assert page.locator(f"{thumb} canvas.overlay").is_hidden()
    assert not page.camlabel_errors, page.camlabel_errors
