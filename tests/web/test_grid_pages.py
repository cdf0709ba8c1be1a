"""Review grid keyset pages both ways on SQLite and PostgreSQL: "next" then "previous" shows the
same page again, for both sort orders, with filters, across the scored/unscored boundary."""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

import pytest
from flask import Flask

from tests.web.helpers import Browser, Factory, login

PAGE_SIZE = 3
#: Scores of the test images (``None``: no box); ties and unscored images cross page boundaries.
SCORES = [0.9, 0.1, 0.5, None, 0.5, 0.3, None, 0.7, 0.5, 0.2, None]


@dataclass
class GridView:
    """What one grid page shows: thumbnail ids in order and its pager links (``None`` if absent)."""

    ids: list[int]
    first: str | None
    prev: str | None
    next: str | None


def _link(html: str, link_id: str) -> str | None:
    match = re.search(rf'id="{link_id}" href="([^"]+)"', html)
    return match.group(1).replace("&amp;", "&") if match else None


def _view(browser: Browser, url: str) -> GridView:
    response = browser.client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    html = response.get_data(as_text=True)
    return GridView(ids=[int(i) for i in re.findall(r'data-image-id="(\d+)"', html)], first=_link(html, "first-page"),
                    prev=_link(html, "prev-page"), next=_link(html, "next-page"))


@pytest.fixture
def grid(db_app: Flask, db_factory: Factory):  # type: ignore[no-untyped-def]
    """A reviewer, a collection of :data:`SCORES` images (raccoon boxes; kangaroo boxes on every
    third image) and the expected order: ``(browser, collection_id, categories, ids)``."""
    db_app.config["PAGE_SIZE"] = PAGE_SIZE
    db_factory.user("r@example.com")
    browser = login(db_app.test_client(), "r@example.com")
    cid, cats = db_factory.collection()
    ids = []
    for n, score in enumerate(SCORES):
        image_id = db_factory.image(cid, f"raccoon/{n}.png", seed=n)
        if score is not None:
            db_factory.box(image_id, cats["raccoon"], score=score)
            if n % 2 == 0:
                db_factory.box(image_id, cats["kangaroo"], score=min(1.0, score + 0.05))
        ids.append(image_id)
    return browser, cid, cats, ids


def _expected(ids: list[int], scores: list[float | None], sort: str) -> list[int]:
    if sort == "id":
        return sorted(ids)
    scored = sorted(((s, i) for i, s in zip(ids, scores, strict=True) if s is not None), reverse=sort == "-score")
    return [i for _s, i in scored] + sorted(i for i, s in zip(ids, scores, strict=True) if s is None)


@pytest.mark.parametrize("sort", ["score", "-score", "id"])
def test_next_then_previous_walks_back_through_the_same_pages(grid, sort: str) -> None:  # type: ignore[no-untyped-def]
    browser, cid, _cats, ids = grid
    forward = [_view(browser, f"/review/collections/{cid}?sort={sort}")]
    assert forward[0].prev is None and forward[0].first is None
    while forward[-1].next:
        forward.append(_view(browser, forward[-1].next))
        assert len(forward) < 20, "pagination did not end"
    assert [i for page in forward for i in page.ids] == _expected(ids, SCORES, sort)
    assert len(forward) == 4 and all(len(page.ids) == PAGE_SIZE for page in forward[:-1])

    backward = [forward[-1]]
    while backward[-1].prev:
        assert backward[-1].first is not None
        backward.append(_view(browser, backward[-1].prev))
        assert len(backward) < 20, "pagination did not end"
    assert [page.ids for page in reversed(backward)] == [page.ids for page in forward]
    assert backward[-1].first is None and backward[-1].next is not None

    for page, after in pairwise(forward):  # next then previous, and previous then next
        assert after.prev is not None
        again = _view(browser, after.prev)
        assert again.ids == page.ids
        assert again.next is not None and _view(browser, again.next).ids == after.ids


def test_previous_pages_keep_the_filter(grid) -> None:  # type: ignore[no-untyped-def]
    browser, cid, cats, ids = grid
    query = f"category_id={cats['kangaroo']}&status=proposed&sort=score"
    kangaroo = [i for n, (i, s) in enumerate(zip(ids, SCORES, strict=True)) if s is not None and n % 2 == 0]
    expected = [i for i in _expected(ids, SCORES, "score") if i in kangaroo]  # by the image's lowest score
    first = _view(browser, f"/review/collections/{cid}?{query}")
    assert first.ids == expected[:PAGE_SIZE] and first.next is not None
    second = _view(browser, first.next)
    assert second.prev is not None and f"category_id={cats['kangaroo']}" in second.prev and "status=proposed" in second.prev
    assert _view(browser, second.prev).ids == first.ids
    assert second.ids == expected[PAGE_SIZE:] and second.next is None


def test_previous_from_near_the_start_shows_the_first_full_page(grid) -> None:  # type: ignore[no-untyped-def]
    from web.queries import Cursor

    browser, cid, _cats, ids = grid
    order = _expected(ids, SCORES, "score")
    first = _view(browser, f"/review/collections/{cid}")
    # Fewer than a page lies before the second image: "previous" answers the first page, full.
    near = _view(browser, f"/review/collections/{cid}?before={Cursor(sorted(s for s in SCORES if s is not None)[1], order[1]).encode()}")
    assert near.ids == first.ids == order[:PAGE_SIZE] and near.prev is None and near.first is None
    both = browser.client.get(f"/review/collections/{cid}?cursor={Cursor(0.5, order[3]).encode()}&before={Cursor(0.5, order[3]).encode()}")
    assert both.status_code == 400
    assert browser.client.get(f"/review/collections/{cid}?before=%%%").status_code == 400


def test_a_page_past_the_end_links_back_to_the_first(grid) -> None:  # type: ignore[no-untyped-def]
    from web.queries import Cursor

    browser, cid, _cats, ids = grid
    past = _view(browser, f"/review/collections/{cid}?sort=id&cursor={Cursor(None, max(ids)).encode()}")
    assert past.ids == [] and past.prev is None and past.next is None
    assert past.first is not None and _view(browser, past.first).ids == sorted(ids)[:PAGE_SIZE]


def _page_info(browser: Browser, url: str) -> str:
    """The pager's text as rendered ("Page N"; the total is filled in by grid.js)."""
    html = browser.client.get(url).get_data(as_text=True)
    match = re.search(r'<span id="page-info"[^>]*>([^<]+)</span>', html)
    assert match, html[:300]
    return " ".join(match.group(1).split())


def _count(browser: Browser, cid: int, query: str) -> dict:
    response = browser.api("GET", f"/api/v1/collections/{cid}/image-count?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


@pytest.mark.parametrize("sort", ["score", "-score", "id"])
def test_page_numbers_totals_and_jumping_to_a_page(grid, sort: str) -> None:  # type: ignore[no-untyped-def]
    browser, cid, _cats, ids = grid
    order = _expected(ids, SCORES, sort)
    base = f"/review/collections/{cid}?sort={sort}"
    assert _page_info(browser, base) == "Page 1"
    assert _count(browser, cid, f"sort={sort}") == {"count": len(ids), "exact": True}
    second = _view(browser, base)
    assert second.next is not None and "page=2" in second.next
    assert _page_info(browser, second.next) == "Page 2"
    for number in (1, 2, 3, 4):  # jump: the page's first row found on the index, across the scored/unscored parts
        assert _view(browser, f"{base}&goto={number}").ids == order[(number - 1) * PAGE_SIZE:number * PAGE_SIZE]
        assert _page_info(browser, f"{base}&goto={number}") == f"Page {number}"
    assert _view(browser, f"{base}&goto=99").ids == order[3 * PAGE_SIZE:]  # past the end: the last page
    assert _page_info(browser, f"{base}&goto=99") == "Page 4"
    third = _view(browser, f"{base}&goto=3")
    assert third.prev is not None and _page_info(browser, third.prev) == "Page 2"
    assert _view(browser, third.prev).ids == order[PAGE_SIZE:2 * PAGE_SIZE]
    for bad in ("goto=0", "goto=x", "page=-1"):
        response = browser.client.get(f"{base}&{bad}", headers={"Accept": "application/json"})
        assert response.status_code == 400 and bad.split("=")[0] in response.get_json()["error"]["message"]


def test_filtered_totals_are_counted_and_capped(grid, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import web.queries

    browser, cid, cats, _ids = grid
    kangaroo = sum(1 for n, s in enumerate(SCORES) if s is not None and n % 2 == 0)
    assert _count(browser, cid, f"category_id={cats['kangaroo']}") == {"count": kangaroo, "exact": True}
    assert _count(browser, cid, "no_box=1") == {"count": 3, "exact": True}
    assert _count(browser, cid, "review=reviewed") == {"count": 0, "exact": True}
    monkeypatch.setattr(web.queries.count_images, "__kwdefaults__", {"cap": 4})
    assert _count(browser, cid, "") == {"count": 4, "exact": False}
    bad = browser.api("GET", f"/api/v1/collections/{cid}/image-count?sort=best")
    assert bad.status_code == 400 and "sort must be one of" in bad.get_json()["error"]["message"]
