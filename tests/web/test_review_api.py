"""Review API on SQLite and PostgreSQL: filtered keyset pages, box edits with row versions
(409 on stale edits, never an overwrite), drawing, deleting, accept-all, bulk accept."""

from __future__ import annotations

import pytest
import torch

from tests.web.helpers import Browser, login
from worker.store.models import Box, Image


def _all_pages(browser: Browser, url: str) -> list[dict]:
    items, cursor = [], None
    for _ in range(100):
        sep = "&" if "?" in url else "?"
        page = browser.api("GET", url + (f"{sep}cursor={cursor}" if cursor else "")).get_json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return items
    raise AssertionError("pagination did not end")


def test_images_sorted_lowest_score_first_with_keyset_pages(reviewer_setup) -> None:  # type: ignore[no-untyped-def]
    browser, factory, cid, cats = reviewer_setup
    scores = [0.9, 0.1, 0.5, None, 0.5, 0.3, None, 0.7]
    ids = []
    for n, score in enumerate(scores):
        image_id = factory.image(cid, f"raccoon/{n}.png", seed=n)
        if score is not None:
            factory.box(image_id, cats["raccoon"], score=score)
            factory.box(image_id, cats["raccoon"], score=min(1.0, score + 0.05))
        ids.append(image_id)
    items = _all_pages(browser, f"/api/v1/collections/{cid}/images?limit=3")
    got = [(i["min_score"], i["id"]) for i in items]
    expected = sorted([(s, i) for s, i in zip(scores, ids, strict=True) if s is not None]) + [(None, i) for s, i in zip(scores, ids, strict=True) if s is None]
    assert got == expected
    assert all(len(i["boxes"]) == (2 if i["min_score"] is not None else 0) for i in items)
    by_id = _all_pages(browser, f"/api/v1/collections/{cid}/images?limit=5&sort=id")
    assert [i["id"] for i in by_id] == sorted(ids)


def test_image_filters(reviewer_setup) -> None:  # type: ignore[no-untyped-def]
    browser, factory, cid, cats = reviewer_setup
    a = factory.image(cid, "raccoon/a.png", seed=1)
    b = factory.image(cid, "kangaroo/b.png", seed=2)
    c = factory.image(cid, "kangaroo/c.png", seed=3)
    empty = factory.image(cid, "x/empty.png", seed=4)
    factory.image(cid, "x/broken.png", status="failed", failure_reason="cannot identify image file", seed=5)
    factory.box(a, cats["raccoon"], score=0.2)
    factory.box(b, cats["kangaroo"], score=0.8, status="accepted")
    factory.box(c, cats["kangaroo"], score=0.6)

    def ids(query: str) -> list[int]:
        return [i["id"] for i in _all_pages(browser, f"/api/v1/collections/{cid}/images?{query}")]

    assert ids(f"category_id={cats['kangaroo']}") == [c, b]
    assert ids("status=proposed") == [a, c]
    assert ids("status=accepted") == [b]
    assert ids("min_score=0.5&max_score=0.7") == [c]
    assert ids("no_box=1") == [empty]
    assert ids("") == [a, c, b, empty]  # failed images are not in the grid
    failed = browser.api("GET", f"/api/v1/collections/{cid}/failed-images").get_json()["items"]
    assert [f["failure_reason"] for f in failed] == ["cannot identify image file"]
    bad = browser.api("GET", f"/api/v1/collections/{cid}/images?status=maybe")
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_query"
    assert browser.api("GET", f"/api/v1/collections/{cid}/images?cursor=%%%").status_code == 400
    assert browser.api("GET", f"/api/v1/collections/{cid}/images?limit=0").status_code == 400


def test_box_edit_versions_and_conflict(reviewer_setup) -> None:  # type: ignore[no-untyped-def]
    browser, factory, cid, cats = reviewer_setup
    image_id = factory.image(cid, "raccoon/a.png")
    box_id = factory.box(image_id, cats["raccoon"], score=0.4)
    other = login(browser.client.application.test_client(), "r@example.com")  # a second reviewer session

    moved = browser.api("PATCH", f"/api/v1/boxes/{box_id}", {"version": 1, "x1": 10, "y1": 12, "x2": 40, "y2": 30})
    assert moved.status_code == 200, moved.get_json()
    assert moved.get_json()["version"] == 2 and moved.get_json()["status"] == "edited"
    stale = other.api("PATCH", f"/api/v1/boxes/{box_id}", {"version": 1, "status": "rejected"})
    assert stale.status_code == 409
    error = stale.get_json()["error"]
    assert error["code"] == "stale_edit" and error["current"]["version"] == 2 and error["current"]["x1"] == 10
    box = factory.get(Box, box_id)
    assert box.status.value == "edited" and box.x1 == 10  # the stale edit wrote nothing
    accepted = other.api("PATCH", f"/api/v1/boxes/{box_id}", {"version": 2, "status": "accepted"})
    assert accepted.status_code == 200 and accepted.get_json()["version"] == 3
    assert browser.api("PATCH", f"/api/v1/boxes/{box_id}", {"status": "accepted"}).status_code == 400  # version required
    assert browser.api("PATCH", f"/api/v1/boxes/{box_id}", {"version": 3, "status": "bogus"}).status_code == 400
    clipped = browser.api("PATCH", f"/api/v1/boxes/{box_id}", {"version": 3, "x1": -5, "y1": 0, "x2": 500, "y2": 20}).get_json()
    assert (clipped["x1"], clipped["x2"]) == (0, 64)  # clipped to the 64x48 image
    assert browser.api("PATCH", f"/api/v1/boxes/{box_id}", {"version": 4, "category_id": 999999}).status_code == 400
    changed = browser.api("PATCH", f"/api/v1/boxes/{box_id}", {"version": 4, "category_id": cats["kangaroo"]}).get_json()
    assert changed["category_id"] == cats["kangaroo"] and changed["status"] == "edited"


def test_reject_updates_image_stats_draw_and_delete(reviewer_setup) -> None:  # type: ignore[no-untyped-def]
    browser, factory, cid, cats = reviewer_setup
    image_id = factory.image(cid, "raccoon/a.png")
    low = factory.box(image_id, cats["raccoon"], score=0.2)
    factory.box(image_id, cats["raccoon"], score=0.6)
    assert factory.get(Image, image_id).min_score == pytest.approx(0.2)
    assert browser.api("PATCH", f"/api/v1/boxes/{low}", {"version": 1, "status": "rejected"}).status_code == 200
    assert factory.get(Image, image_id).min_score == pytest.approx(0.6)

    drawn = browser.api("POST", f"/api/v1/images/{image_id}/boxes", {"category_id": cats["kangaroo"], "x1": 30, "y1": 5, "x2": 10, "y2": 25})
    assert drawn.status_code == 201
    body = drawn.get_json()
    assert (body["x1"], body["x2"], body["source"], body["status"], body["score"]) == (10, 30, "human", "accepted", None)
    assert browser.api("POST", f"/api/v1/images/{image_id}/boxes", {"category_id": cats["kangaroo"], "x1": 1, "y1": 1, "x2": 1.5, "y2": 9}).status_code == 400
    assert factory.get(Image, image_id).n_boxes == 2

    assert browser.api("DELETE", f"/api/v1/boxes/{body['id']}?version=7").status_code == 409
    assert browser.api("DELETE", f"/api/v1/boxes/{body['id']}").status_code == 400
    assert browser.api("DELETE", f"/api/v1/boxes/{body['id']}?version=1").status_code == 204
    assert factory.get(Box, body["id"]) is None
    assert factory.get(Image, image_id).n_boxes == 1


def test_accept_all_and_bulk_accept(reviewer_setup) -> None:  # type: ignore[no-untyped-def]
    browser, factory, cid, cats = reviewer_setup
    one = factory.image(cid, "raccoon/1.png", seed=1)
    b1 = factory.box(one, cats["raccoon"], score=0.3)
    b2 = factory.box(one, cats["kangaroo"], score=0.4)
    result = browser.api("POST", f"/api/v1/images/{one}/accept-all", {"versions": {str(b1): 1, str(b2): 1}})
    assert result.status_code == 200
    assert sorted(b["status"] for b in result.get_json()["updated"]) == ["accepted", "accepted"]

    two = factory.image(cid, "raccoon/2.png", seed=2)
    high = factory.box(two, cats["raccoon"], score=0.95)
    low = factory.box(two, cats["raccoon"], score=0.5)
    roo = factory.box(two, cats["kangaroo"], score=0.99)
    done = browser.api("POST", f"/api/v1/collections/{cid}/bulk-accept", {"category_id": cats["raccoon"], "min_score": 0.9})
    assert done.get_json()["accepted"] == 1
    assert factory.get(Box, high).status.value == "accepted" and factory.get(Box, high).version == 2
    assert factory.get(Box, low).status.value == "proposed" and factory.get(Box, roo).status.value == "proposed"
    stale = browser.api("POST", f"/api/v1/images/{two}/accept-all", {"versions": {str(low): 1, str(roo): 5}})
    assert stale.status_code == 409
    assert [b["id"] for b in stale.get_json()["error"]["updated"]] == [low]


def test_box_list_pagination_and_image_detail(reviewer_setup) -> None:  # type: ignore[no-untyped-def]
    browser, factory, cid, cats = reviewer_setup
    made = []
    for n in range(7):
        image_id = factory.image(cid, f"raccoon/{n}.png", seed=n)
        made.append(factory.box(image_id, cats["raccoon"], score=n / 10))
    map_key = factory.concept_map(image_id, cats["raccoon"], [[0.0, 1.0, 2.0], [4.0, 3.0, 0.5]], with_png=True)
    boxes = _all_pages(browser, f"/api/v1/collections/{cid}/boxes?limit=2")
    assert [b["id"] for b in boxes] == made
    high = _all_pages(browser, f"/api/v1/collections/{cid}/boxes?min_score=0.45")
    assert [b["score"] for b in high] == pytest.approx([0.5, 0.6])
    detail = browser.api("GET", f"/api/v1/images/{image_id}").get_json()
    assert detail["boxes"][0]["id"] == made[-1]
    assert detail["concept_maps"][0]["overlay_url"].startswith("/blobs/overlays/")
    assert detail["concept_maps"][0]["map_url"] == f"/api/v1/maps/{map_key}"


def test_concept_map_values_are_the_map_normalised_to_bytes(reviewer_setup) -> None:  # type: ignore[no-untyped-def]
    """The values a heatmap paints: the stored float16 map min-max normalised to 0..255, as
    camcore.concept_maps.normalize_map makes them; immutable; only map blobs are served."""
    from camcore.concept_maps import decode_map, encode_map, normalize_map

    browser, factory, cid, cats = reviewer_setup
    image_id = factory.image(cid, "raccoon/a.png")
    cam = [[-1.5, 0.25, 2.0, 7.0], [3.0, 3.5, -0.75, 1.0], [0.0, 6.5, 5.0, 4.0]]
    key = factory.concept_map(image_id, cats["raccoon"], cam)
    assert factory.runtime.blobs.read_bytes(key) == encode_map(torch.tensor(cam))  # the bytes infer stores
    detail = browser.api("GET", f"/api/v1/images/{image_id}").get_json()
    assert detail["concept_maps"][0]["overlay_url"] is None
    response = browser.api("GET", detail["concept_maps"][0]["map_url"])
    assert response.status_code == 200 and "immutable" in response.headers["Cache-Control"]
    body = response.get_json()
    assert body["shape"] == [3, 4] and body["min"] == -1.5 and body["max"] == 7.0
    assert body["values"] == normalize_map(decode_map(factory.runtime.blobs.read_bytes(key))).ravel().tolist()
    assert body["values"][0] == 0 and body["values"][3] == 255  # the coldest and hottest cells
    flat = factory.concept_map(image_id, cats["kangaroo"], [[2.0, 2.0], [2.0, 2.0]])
    assert browser.api("GET", f"/api/v1/maps/{flat}").get_json()["values"] == [0, 0, 0, 0]
    thumb = factory.runtime.blobs.put_bytes(factory.png(), kind="thumbs", suffix=".png")
    for bad in (thumb, "maps/../../etc/passwd", "maps/00/00/" + "0" * 64 + ".npy"):
        assert browser.api("GET", f"/api/v1/maps/{bad}").status_code == 404
