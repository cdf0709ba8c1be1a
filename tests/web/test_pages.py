"""Dashboard and review pages render real rows, escape user text, and work through forms."""

from __future__ import annotations

import json
import re

from flask import Flask

from tests.web.helpers import Factory

EVIL = '<script>alert("x")</script>.png'


def test_grid_draws_boxes_filters_and_escapes_names(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, cats = factory.collection("safe-name")
    bad = factory.image(cid, "raccoon/" + EVIL, seed=1)
    factory.box(bad, cats["raccoon"], score=0.25, xyxy=(2, 3, 20, 30))
    other = factory.image(cid, "kangaroo/b.png", seed=2)
    factory.box(other, cats["kangaroo"], score=0.75, status="accepted")
    map_key = factory.concept_map(bad, cats["raccoon"])
    page = reviewer.client.get(f"/review/collections/{cid}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert html.index(f'data-image-id="{bad}"') < html.index(f'data-image-id="{other}"')  # lowest score first
    assert re.search(r'<rect class="box status-proposed" x="2.0" y="3.0" width="18.0" height="27.0"', html)
    assert f'<canvas class="overlay" data-map="/api/v1/maps/{map_key}"' in html
    only = reviewer.client.get(f"/review/collections/{cid}?status=accepted").get_data(as_text=True)
    assert f'data-image-id="{other}"' in only and f'data-image-id="{bad}"' not in only
    assert reviewer.client.get(f"/review/collections/{cid}?sort=wrong").status_code == 400


def test_grid_pages_with_a_cursor(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    app.config["PAGE_SIZE"] = 2
    cid, cats = factory.collection()
    ids = [factory.image(cid, f"raccoon/{n}.png", seed=n) for n in range(5)]
    for n, image_id in enumerate(ids):
        factory.box(image_id, cats["raccoon"], score=0.9 - n / 10)
    seen, url = [], f"/review/collections/{cid}"
    while url:
        html = reviewer.client.get(url).get_data(as_text=True)
        seen.extend(int(i) for i in re.findall(r'data-image-id="(\d+)"', html))
        match = re.search(r'id="next-page" href="([^"]+)"', html)
        url = match.group(1).replace("&amp;", "&") if match else None
    assert seen == list(reversed(ids))


def test_image_view_embeds_safe_json_and_neighbours(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, cats = factory.collection()
    first = factory.image(cid, "raccoon/" + EVIL, seed=1)
    second = factory.image(cid, "raccoon/second.png", seed=2)
    factory.box(first, cats["raccoon"], score=0.1)
    factory.box(second, cats["raccoon"], score=0.2)
    html = reviewer.client.get(f"/review/images/{first}?status=proposed").get_data(as_text=True)
    assert "<script>alert" not in html
    raw = re.search(r'<script type="application/json" id="review-data">(.*?)</script>', html, re.S).group(1)
    data = json.loads(raw)
    assert data["image"]["rel_path"].endswith(EVIL)
    assert data["boxes"][0]["version"] == 1
    assert data["next_url"] == f"/review/images/{second}?sort=score&status=proposed" and data["prev_url"] is None
    assert "vendor/annotorious/annotorious.js" in html
    back = json.loads(re.search(r'id="review-data">(.*?)</script>', reviewer.client.get(f"/review/images/{second}").get_data(as_text=True), re.S).group(1))
    assert back["prev_url"].startswith(f"/review/images/{first}")
    assert reviewer.client.get("/review/images/99999").status_code == 404


def test_collection_page_shows_jobs_errors_and_evaluation(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    from worker.store.models import Evaluation, Job, JobKind, JobStatus

    cid, _ = factory.collection()
    factory.image(cid, "bad/" + EVIL, status="failed", failure_reason="cannot identify image file <b>")
    with factory.session() as s:
        s.add(Job(collection_id=cid, kind=JobKind.train, status=JobStatus.failed, done=3, total=10, error="CUDA <out> of memory", params={}))
        s.add(Job(collection_id=cid, kind=JobKind.infer, status=JobStatus.running, done=5, total=20, params={}))
        s.add(Evaluation(collection_id=cid, box_status="all", metrics={"corloc": 0.8125, "ap50": 0.5}))
        s.commit()
    html = reviewer.client.get(f"/collections/{cid}").get_data(as_text=True)
    assert "CUDA &lt;out&gt; of memory" in html
    assert 'value="5" max="20"' in html and "5/20" in html
    assert "cannot identify image file &lt;b&gt;" in html and "<script>alert" not in html
    table = html[html.index('id="evaluation-table"'):]
    assert "0.812" in table and "CorLoc@0.5" in table and "model_version_id" not in table
    assert html.count("job-cancel") == 1  # only the unfinished job has a cancel button
    assert 'id="delete-collection"' not in html  # reviewers cannot delete


def test_forms_create_collection_and_bulk_accept(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    from worker.store.models import Box

    made = reviewer.form("/collections", {"name": "from form"})
    assert made.status_code == 302
    page = reviewer.client.get(made.headers["Location"]).get_data(as_text=True)
    assert "Collection from form created." in page
    duplicate = reviewer.form("/collections", {"name": "from form"}, follow_redirects=True).get_data(as_text=True)
    assert "already exists" in duplicate
    cid, cats = factory.collection("bulk")
    image_id = factory.image(cid, "raccoon/a.png")
    box = factory.box(image_id, cats["raccoon"], score=0.95)
    done = reviewer.form(f"/collections/{cid}/bulk-accept", {"category_id": cats["raccoon"], "min_score": "0.9"}, follow_redirects=True)
    assert "Accepted 1 box(es) of raccoon" in done.get_data(as_text=True)
    assert factory.get(Box, box).status.value == "accepted"


def test_account_page_creates_and_revokes_tokens(app: Flask, reviewer) -> None:  # type: ignore[no-untyped-def]
    html = reviewer.form("/account/tokens", {"name": "laptop"}).get_data(as_text=True)
    token = re.search(r'<code id="new-token">([^<]+)</code>', html).group(1)
    anon = app.test_client()
    assert anon.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    token_id = reviewer.api("GET", "/api/v1/tokens").get_json()["items"][0]["id"]
    assert reviewer.form(f"/account/tokens/{token_id}/revoke", {}).status_code == 302
    assert anon.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_admin_users_page(app: Flask, admin) -> None:  # type: ignore[no-untyped-def]
    done = admin.form("/users", {"email": "x@example.com", "password": "long enough pw"}, follow_redirects=True).get_data(as_text=True)
    assert "User created." in done and "x@example.com" in done
    short = admin.form("/users", {"email": "y@example.com", "password": "short"}, follow_redirects=True).get_data(as_text=True)
    assert "at least 8 characters" in short
