"""Per-image review state through the API and the CLI: "no objects" marks (a reviewed negative),
box edits that make an image reviewed, and what the default export holds as a result."""

from __future__ import annotations

import json

from click.testing import CliRunner
from flask import Flask

from tests.web.helpers import Factory
from worker.store.models import Box, Image


def _exported_files(reviewer, cid: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """``{file_name: number of boxes}`` of the default COCO export."""
    with reviewer.client.get(f"/api/v1/collections/{cid}/export") as response:
        coco = json.loads(response.data)
    counts = {img["file_name"]: 0 for img in coco["images"]}
    names = {img["id"]: img["file_name"] for img in coco["images"]}
    for ann in coco["annotations"]:
        counts[names[ann["image_id"]]] += 1
    return counts


def test_no_objects_rejects_the_boxes_seen_and_exports_a_negative(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, cats = factory.collection()
    image = factory.image(cid, "kangaroo/empty.png")
    other = factory.image(cid, "raccoon/a.png", seed=5)
    proposed = factory.box(image, cats["kangaroo"], score=0.4)
    gt = factory.box(image, cats["kangaroo"], score=1.0, status="accepted", source="ground_truth")
    factory.box(other, cats["raccoon"], score=0.9)
    assert _exported_files(reviewer, cid) == {}  # nobody reviewed anything yet

    stale = reviewer.api("POST", f"/api/v1/images/{image}/no-objects", {"versions": {str(proposed): 7}})
    assert stale.status_code == 409 and stale.get_json()["error"]["current"]["id"] == proposed
    assert factory.get(Image, image).review_state.value == "unreviewed"  # nothing changed
    unseen = reviewer.api("POST", f"/api/v1/images/{image}/no-objects", {"versions": {}})
    assert unseen.status_code == 409  # a box the client never saw is not rejected blindly

    marked = reviewer.api("POST", f"/api/v1/images/{image}/no-objects", {"versions": {str(proposed): 1}})
    assert marked.status_code == 200, marked.get_json()
    body = marked.get_json()
    assert body["review_state"] == "no_objects" and [(b["id"], b["status"], b["version"]) for b in body["boxes"]] == [(proposed, "rejected", 2)]
    assert factory.get(Box, gt).status.value == "accepted"  # ground truth untouched
    row = factory.get(Image, image)
    assert row.reviewed_by_id is not None and row.reviewed_at is not None and row.n_boxes == 0
    assert _exported_files(reviewer, cid) == {"kangaroo/empty.png": 0}  # a real negative; the unreviewed one stays out

    undone = reviewer.api("DELETE", f"/api/v1/images/{image}/no-objects")
    assert undone.status_code == 200 and undone.get_json()["review_state"] == "reviewed"
    assert reviewer.api("POST", "/api/v1/images/99999/no-objects", {}).status_code == 404
    bad = reviewer.api("POST", f"/api/v1/images/{image}/no-objects", {"versions": {"abc": 1}})
    assert bad.status_code == 400 and "versions" in bad.get_json()["error"]["message"]


def test_box_actions_make_an_image_reviewed(app: Flask, factory: Factory, reviewer) -> None:  # type: ignore[no-untyped-def]
    cid, cats = factory.collection()
    accepted = factory.image(cid, "raccoon/a.png", seed=1)
    drawn = factory.image(cid, "raccoon/b.png", seed=2)
    deleted = factory.image(cid, "raccoon/c.png", seed=3)
    bulk = factory.image(cid, "raccoon/d.png", seed=4)
    untouched = factory.image(cid, "raccoon/e.png", seed=5)
    box_a = factory.box(accepted, cats["raccoon"], score=0.5)
    box_c = factory.box(deleted, cats["raccoon"], score=0.5)
    factory.box(bulk, cats["raccoon"], score=0.95)
    factory.box(untouched, cats["raccoon"], score=0.2)

    assert reviewer.api("PATCH", f"/api/v1/boxes/{box_a}", {"version": 1, "status": "accepted"}).status_code == 200
    assert reviewer.api("POST", f"/api/v1/images/{drawn}/boxes", {"category_id": cats["raccoon"], "x1": 1, "y1": 1, "x2": 20, "y2": 20}).status_code == 201
    assert reviewer.api("DELETE", f"/api/v1/boxes/{box_c}?version=1").status_code == 204
    assert reviewer.api("POST", f"/api/v1/collections/{cid}/bulk-accept", {"category_id": cats["raccoon"], "min_score": 0.9}).get_json()["accepted"] == 1
    states = {i: factory.get(Image, i).review_state.value for i in (accepted, drawn, deleted, bulk, untouched)}
    assert states == {accepted: "reviewed", drawn: "reviewed", deleted: "reviewed", bulk: "reviewed", untouched: "unreviewed"}
    assert _exported_files(reviewer, cid) == {"raccoon/a.png": 1, "raccoon/b.png": 1, "raccoon/c.png": 0, "raccoon/d.png": 1}


def test_cli_marks_and_unmarks_no_objects(app: Flask, factory: Factory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from web.cli import main

    cid, cats = factory.collection("cli-coll")
    image = factory.image(cid, "kangaroo/x.png")
    factory.box(image, cats["kangaroo"], score=0.3)
    runtime = app.extensions["camlabel"]
    monkeypatch.setenv("DATABASE_URL", runtime.settings.database_url)
    monkeypatch.setenv("CAMLABEL_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.delenv("REDIS_URL", raising=False)
    runner = CliRunner()
    result = runner.invoke(main, ["review", "no-objects", "cli-coll", "kangaroo/x.png"])
    assert result.exit_code == 0, result.output
    assert "marked 'no objects' (1 box(es) rejected)" in result.output
    assert factory.get(Image, image).review_state.value == "no_objects"
    result = runner.invoke(main, ["review", "no-objects", "cli-coll", "kangaroo/x.png", "--undo"])
    assert result.exit_code == 0 and factory.get(Image, image).review_state.value == "reviewed"
    result = runner.invoke(main, ["review", "no-objects", "cli-coll", "nope.png"])
    assert result.exit_code != 0 and "has no image 'nope.png'" in result.output
