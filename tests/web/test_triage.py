"""Triage from the grid on SQLite and PostgreSQL: bulk accept's preview, accepting or rejecting a
selection, undo of a bulk write as one action (boxes edited since keep the newer edit), review
progress and per-class counts, the "disagree with tags" filter, and errors naming the field."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.web.helpers import Browser, Factory
from worker.store.models import Box, Image, ImageTag


def _tag(factory: Factory, image_id: int, category_id: int) -> None:
    with factory.session() as s:
        s.add(ImageTag(image_id=image_id, category_id=category_id))
        s.commit()


def _status(factory: Factory, box_id: int) -> str:
    return factory.get(Box, box_id).status.value


def _state(factory: Factory, image_id: int) -> str:
    return factory.get(Image, image_id).review_state.value


def test_bulk_accept_preview_apply_and_undo(reviewer_setup) -> None:  # type: ignore[no-untyped-def]
    browser, factory, cid, cats = reviewer_setup
    images = [factory.image(cid, f"raccoon/{n}.png", seed=n) for n in range(4)]
    high = [factory.box(images[0], cats["raccoon"], score=0.95), factory.box(images[0], cats["raccoon"], score=0.91),
            factory.box(images[1], cats["raccoon"], score=0.97)]
    low = factory.box(images[2], cats["raccoon"], score=0.4)
    other = factory.box(images[3], cats["kangaroo"], score=0.99)

    url = f"/api/v1/collections/{cid}/bulk-accept"
    preview = browser.api("GET", f"{url}/preview?category_id={cats['raccoon']}&min_score=0.9").get_json()
    assert (preview["n_boxes"], preview["n_images"]) == (3, 2)
    assert [s["id"] for s in preview["samples"]] == [images[0], images[1]]  # lowest box score first
    assert preview["samples"][0]["score"] == pytest.approx(0.91) and preview["samples"][0]["thumb_url"].startswith("/blobs/images/")
    assert all(_status(factory, b) == "proposed" for b in high)  # a preview writes nothing

    done = browser.api("POST", url, {"category_id": cats["raccoon"], "min_score": 0.9}).get_json()
    assert done["accepted"] == 3
    assert [_status(factory, b) for b in high] == ["accepted"] * 3
    assert _status(factory, low) == "proposed" and _status(factory, other) == "proposed"
    assert [_state(factory, i) for i in images] == ["reviewed", "reviewed", "unreviewed", "unreviewed"]
    stats = browser.api("GET", f"/api/v1/collections/{cid}/review-stats").get_json()
    assert stats["images"] == {"total": 4, "to_review": 2, "reviewed": 2, "no_objects": 0}
    raccoon = next(c for c in stats["classes"] if c["name"] == "raccoon")
    assert (raccoon["proposed"], raccoon["accepted"], raccoon["reviewed"], raccoon["rejected"]) == (1, 3, 3, 0)

    # someone rejects one of them meanwhile: undo leaves that box alone and says so
    moved = factory.get(Box, high[2])
    assert browser.api("PATCH", f"/api/v1/boxes/{high[2]}", {"version": moved.version, "status": "rejected"}).status_code == 200
    undo = browser.api("POST", f"/api/v1/collections/{cid}/review-operations/{done['operation_id']}/undo")
    assert undo.status_code == 200 and undo.get_json() | {"operation_id": 0} == {"operation_id": 0, "restored": 2, "skipped": 1}
    assert [_status(factory, b) for b in high] == ["proposed", "proposed", "rejected"]
    assert factory.get(Box, high[0]).version == 3  # accepted (2), put back (3): open editors see the change
    assert _state(factory, images[0]) == "unreviewed" and _state(factory, images[1]) == "reviewed"  # a person's decision stays
    again = browser.api("POST", f"/api/v1/collections/{cid}/review-operations/{done['operation_id']}/undo")
    assert again.status_code == 409 and "already undone" in again.get_json()["error"]["message"]
    assert browser.api("POST", f"/api/v1/collections/{cid}/review-operations/99999/undo").status_code == 404


def test_bulk_accept_preview_sets_the_expected_right_boxes_beside_the_box_by_box_reviews(reviewer_setup) -> None:  # type: ignore[no-untyped-def]
    browser, factory, cid, cats = reviewer_setup
    images = [factory.image(cid, f"raccoon/{n}.png", seed=n) for n in range(6)]
    factory.box(images[0], cats["raccoon"], score=0.95)
    factory.box(images[1], cats["raccoon"], score=0.85)
    bulk = factory.box(images[2], cats["raccoon"], score=0.9)
    # judged in the image view, at or above 0.8: two accepted as proposed, one edited, one rejected
    factory.box(images[3], cats["raccoon"], score=0.97, status="accepted")
    factory.box(images[3], cats["raccoon"], score=0.8, status="accepted")
    factory.box(images[4], cats["raccoon"], score=0.91, status="edited")
    factory.box(images[4], cats["raccoon"], score=0.88, status="rejected")
    # not counted: below the minimum, another class, a person's own box, ground truth
    factory.box(images[5], cats["raccoon"], score=0.5, status="rejected")
    factory.box(images[5], cats["kangaroo"], score=0.99, status="rejected")
    factory.box(images[5], cats["raccoon"], score=None, status="accepted", source="human")
    factory.box(images[5], cats["raccoon"], score=None, status="accepted", source="ground_truth")
    url = f"/api/v1/collections/{cid}/bulk-accept"

    def preview(min_score: float, category: str = "raccoon") -> dict:  # type: ignore[type-arg]
        response = browser.api("GET", f"{url}/preview?category_id={cats[category]}&min_score={min_score}")
        assert response.status_code == 200
        return response.get_json()

    first = preview(0.8)
    assert first["n_boxes"] == 3 and first["expected_right"] == pytest.approx(0.95 + 0.85 + 0.9)
    assert first["reviewed"] == {"boxes": 4, "accepted": 2, "edited": 1, "rejected": 1}
    assert preview(0.9)["reviewed"] == {"boxes": 2, "accepted": 1, "edited": 1, "rejected": 0}
    assert preview(0.99) | {"samples": []} == {"n_boxes": 0, "n_images": 0, "samples": [], "expected_right": 0.0,
                                               "reviewed": {"boxes": 0, "accepted": 0, "edited": 0, "rejected": 0}}
    assert preview(0.8, "kangaroo")["reviewed"]["rejected"] == 1

    # a bulk accept is nobody's look at a box: its boxes do not count until a person changes one
    done = browser.api("POST", url, {"category_id": cats["raccoon"], "min_score": 0.9}).get_json()
    assert done["accepted"] == 2
    assert preview(0.8)["reviewed"] == {"boxes": 4, "accepted": 2, "edited": 1, "rejected": 1}
    moved = factory.get(Box, bulk)
    assert browser.api("PATCH", f"/api/v1/boxes/{bulk}", {"version": moved.version, "status": "rejected"}).status_code == 200
    assert preview(0.8)["reviewed"] == {"boxes": 5, "accepted": 2, "edited": 1, "rejected": 2}
    # undone, the other bulk-accepted box is proposed again (counted in n_boxes, not as reviewed)
    browser.api("POST", f"/api/v1/collections/{cid}/review-operations/{done['operation_id']}/undo")
    after = preview(0.8)
    assert after["n_boxes"] == 2 and after["reviewed"] == {"boxes": 5, "accepted": 2, "edited": 1, "rejected": 2}


def test_accept_and_reject_a_selection_touch_only_its_proposed_boxes(reviewer_setup, db_factory: Factory) -> None:  # type: ignore[no-untyped-def]
    browser, factory, cid, cats = reviewer_setup
    a, b, c = (factory.image(cid, f"raccoon/{n}.png", seed=n) for n in range(3))
    a1, a2 = factory.box(a, cats["raccoon"], score=0.2), factory.box(a, cats["kangaroo"], score=0.3, status="rejected")
    b1 = factory.box(b, cats["raccoon"], score=0.8)
    c1 = factory.box(c, cats["raccoon"], score=0.5)
    other_cid, other_cats = factory.collection("elsewhere")
    foreign = factory.image(other_cid, "x/1.png", seed=9)
    f1 = factory.box(foreign, other_cats["raccoon"], score=0.5)

    url = f"/api/v1/collections/{cid}/review-selection"
    done = browser.api("POST", url, {"image_ids": [a, b, foreign], "status": "accepted"})
    assert done.status_code == 201 and done.get_json()["n_boxes"] == 2
    assert (_status(factory, a1), _status(factory, a2), _status(factory, b1), _status(factory, c1), _status(factory, f1)) == (
        "accepted", "rejected", "accepted", "proposed", "proposed")
    rejected = browser.api("POST", url, {"image_ids": [c], "status": "rejected"}).get_json()
    assert _status(factory, c1) == "rejected" and factory.get(Image, c).n_boxes == 0  # a rejected box leaves the counts
    undo = browser.api("POST", f"/api/v1/collections/{cid}/review-operations/{rejected['operation_id']}/undo").get_json()
    assert undo["restored"] == 1 and _status(factory, c1) == "proposed" and factory.get(Image, c).n_boxes == 1
    assert _state(factory, c) == "unreviewed"
    wrong_collection = browser.api("POST", f"/api/v1/collections/{other_cid}/review-operations/{done.get_json()['operation_id']}/undo")
    assert wrong_collection.status_code == 404

    for body, field in (({"image_ids": [a], "status": "edited"}, "status"), ({"image_ids": "1,2", "status": "accepted"}, "image_ids"),
                        ({"image_ids": [], "status": "accepted"}, "image_ids"), ({"image_ids": [True], "status": "accepted"}, "image_ids")):
        response = browser.api("POST", url, body)
        assert response.status_code == 400 and response.get_json()["error"]["field"] == field, body


def test_bulk_accept_errors_name_the_field(reviewer_setup) -> None:  # type: ignore[no-untyped-def]
    browser, _factory, cid, cats = reviewer_setup
    preview = f"/api/v1/collections/{cid}/bulk-accept/preview"
    for query, field in (("min_score=0.5", "category_id"), (f"category_id={cats['raccoon']}&min_score=high", "min_score"),
                         (f"category_id={cats['raccoon']}", "min_score")):
        response = browser.api("GET", f"{preview}?{query}")
        assert response.status_code == 400 and response.get_json()["error"]["field"] == field, query
    assert browser.api("GET", f"{preview}?category_id={cats['raccoon']}&min_score=1.5").status_code == 400
    other_cid, other_cats = _factory.collection("other")
    response = browser.api("GET", f"{preview}?category_id={other_cats['raccoon']}&min_score=0.5")
    assert response.status_code == 400 and "not a category of collection" in response.get_json()["error"]["message"]


def test_disagree_filter_and_review_state_filter(reviewer_setup) -> None:  # type: ignore[no-untyped-def]
    browser, factory, cid, cats = reviewer_setup
    agree = factory.image(cid, "raccoon/agree.png", seed=1)
    _tag(factory, agree, cats["raccoon"])
    factory.box(agree, cats["raccoon"], score=0.7)
    wrong_class = factory.image(cid, "kangaroo/wrong.png", seed=2)
    _tag(factory, wrong_class, cats["kangaroo"])
    factory.box(wrong_class, cats["raccoon"], score=0.6)
    missing = factory.image(cid, "raccoon/missing.png", seed=3)  # tagged, no box for the tag
    _tag(factory, missing, cats["raccoon"])
    rejected_only = factory.image(cid, "raccoon/rejected.png", seed=4)  # its only wrong box is rejected: agrees
    _tag(factory, rejected_only, cats["raccoon"])
    factory.box(rejected_only, cats["raccoon"], score=0.5)
    factory.box(rejected_only, cats["kangaroo"], score=0.4, status="rejected")
    untagged = factory.image(cid, "loose/untagged.png", seed=5)  # no tags: nothing to disagree with
    factory.box(untagged, cats["raccoon"], score=0.5)

    def ids(query: str) -> list[int]:
        return sorted(i["id"] for i in browser.api("GET", f"/api/v1/collections/{cid}/images?{query}").get_json()["items"])

    assert ids("disagree=1") == sorted([wrong_class, missing])
    browser.api("POST", f"/api/v1/collections/{cid}/review-selection", {"image_ids": [agree], "status": "accepted"})
    assert ids("review=reviewed") == [agree]
    assert ids("review=unreviewed") == sorted([wrong_class, missing, rejected_only, untagged])
    bad = browser.api("GET", f"/api/v1/collections/{cid}/images?review=maybe")
    assert bad.status_code == 400 and "review must be one of" in bad.get_json()["error"]["message"]


def test_progress_on_the_collection_grid_and_image_pages(app: Flask, factory: Factory, reviewer: Browser) -> None:
    cid, cats = factory.collection()
    a, b, _c = (factory.image(cid, f"raccoon/{n}.png", seed=n) for n in range(3))
    factory.box(a, cats["raccoon"], score=0.9)
    factory.box(b, cats["raccoon"], score=0.4)
    reviewer.api("POST", f"/api/v1/collections/{cid}/review-selection", {"image_ids": [a], "status": "accepted"})
    stats_url = f"/api/v1/collections/{cid}/review-stats?classes=0"
    for url in (f"/collections/{cid}", f"/review/collections/{cid}", f"/review/images/{b}"):
        html = reviewer.client.get(url).get_data(as_text=True)
        assert f'id="review-progress" data-stats-url="{stats_url.replace("&", "&amp;")}"' in html, url  # filled by progress.js
    stats = reviewer.api("GET", stats_url).get_json()
    assert stats == {"images": {"total": 3, "to_review": 2, "reviewed": 1, "no_objects": 0}, "classes": []}
