"""Browser tests (Chromium through Playwright on the real ``camlabel run`` server of
the ``server`` fixture) of exports safe to train on and of safety before work starts: the "no objects"
key in the image view, what the export download holds and how it is named, the architecture
dropdown and a refused job, ground truth uploaded from the dashboard and evaluated as reviewed
boxes with per-class rows, typed-name collection delete, and the confirm before revoking a token."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import Server, dev_photos, docs_shot, make_collection, server_sessions

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _image_state(server: Server, image_id: int) -> str:
    from worker.store.models import Image

    with server_sessions(server)() as s:
        return s.get(Image, image_id).review_state.value


def test_no_objects_key_then_the_default_export_holds_only_reviewed_images(page: Any, server: Server, shared_dataset: Path) -> None:
    kangaroo, raccoon = dev_photos(shared_dataset, "kangaroo", 1)[0], dev_photos(shared_dataset, "raccoon", 1)[0]
    cid, _cats, (empty_id, other_id), _boxes = make_collection(server, "negatives", [
        {"photo": kangaroo, "tag": "kangaroo", "boxes": [("k", "raccoon", (10, 10, 120, 90), 0.4)]},
        {"photo": raccoon, "tag": "raccoon", "boxes": [("r", "raccoon", (5, 5, 60, 60), 0.9)]},
    ])
    page.goto(f"{server.url}/review/images/{empty_id}")
    page.wait_for_selector("body[data-ready='1']")
    assert page.text_content("#review-state") == "Not reviewed yet"
    page.keyboard.press("n")
    page.wait_for_function("() => document.getElementById('review-state').dataset.state === 'no_objects'")
    assert page.get_attribute("#no-objects", "aria-pressed") == "true"
    assert page.text_content("#review-state") == "Reviewed: no objects"
    assert page.locator("#box-list li[data-status='rejected']").count() == 1
    assert _image_state(server, empty_id) == "no_objects" and _image_state(server, other_id) == "unreviewed"
    docs_shot(page, "review-image-no-objects")

    page.goto(f"{server.url}/collections/{cid}")
    with page.expect_download() as info:
        page.click("#download-export")
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert info.value.suggested_filename == f"negatives-coco-{today}.json"
    coco = json.loads(Path(info.value.path()).read_text())
    assert [img["file_name"] for img in coco["images"]] == [f"kangaroo/{kangaroo.name}"] and coco["annotations"] == []

    page.check("#export-form input[name=include_unreviewed]")
    page.select_option("#export-form select[name=format]", "yolo")
    page.fill("#export-form input[name=val_fraction]", "0.5")
    with page.expect_download() as info:
        page.click("#download-export")
    assert info.value.suggested_filename == f"negatives-yolo-{today}.zip"
    import zipfile

    with zipfile.ZipFile(info.value.path()) as archive:
        names = set(archive.namelist())
    assert {n.split("/")[1] for n in names if n.startswith("images/")} == {"train", "val"}


def test_architecture_dropdown_and_a_job_refused_before_it_starts(page: Any, server: Server, shared_dataset: Path) -> None:
    from sqlalchemy import func, select

    from camcore.models import ARCHITECTURES
    from worker.store.models import Job

    cid, _cats, _ids, _boxes = make_collection(server, "untagged", [{"photo": dev_photos(shared_dataset, "raccoon", 1)[0], "tag": None}])
    page.goto(f"{server.url}/collections/{cid}")
    options = page.eval_on_selector_all("#train-arch option", "els => els.map(e => e.value)")
    assert options == list(ARCHITECTURES) and page.input_value("#train-arch") == "efficientnet_lite0"
    page.click("#start-train")
    page.wait_for_selector(".flash-error")
    assert "no image of the collection has a tag" in page.text_content(".flash-error")
    page.select_option("#evaluate-boxes", "reviewed")
    page.click("#start-evaluate")
    page.wait_for_selector(".flash-error")
    assert "no ground truth to evaluate against" in page.text_content(".flash-error")
    with server_sessions(server)() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.collection_id == cid)) == 0


def test_ground_truth_upload_and_evaluate_reviewed_boxes_with_per_class_rows(page: Any, server: Server, shared_dataset: Path, tmp_path: Path) -> None:
    raccoons, kangaroos = dev_photos(shared_dataset, "raccoon", 2), dev_photos(shared_dataset, "kangaroo", 1)
    cid, _cats, ids, boxes = make_collection(server, "scored", [
        {"photo": raccoons[0], "tag": "raccoon", "boxes": [("a", "raccoon", (10, 10, 100, 100), 0.9)]},
        {"photo": raccoons[1], "tag": "raccoon", "boxes": [("b", "raccoon", (0, 0, 30, 30), 0.8)]},
        {"photo": kangaroos[0], "tag": "kangaroo", "boxes": [("c", "kangaroo", (20, 20, 120, 140), 0.7)]},
    ])
    coco = {"images": [{"id": n + 1, "file_name": p.name, "width": 1, "height": 1} for n, p in enumerate([*raccoons, *kangaroos])],
            "categories": [{"id": 1, "name": "raccoon"}, {"id": 2, "name": "kangaroo"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 90, 90]},
                            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [100, 100, 50, 50]},
                            {"id": 3, "image_id": 3, "category_id": 2, "bbox": [20, 20, 100, 120]}]}
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(coco))
    page.goto(f"{server.url}/collections/{cid}")
    page.select_option("#gt-format", "coco")
    page.set_input_files("#gt-file", str(gt_file))
    page.click("#gt-import")
    page.wait_for_selector(".flash-ok")
    assert "Ground truth imported: 3 image(s) matched, 3 box(es)" in page.text_content(".flash-ok")

    # a reviewer accepts the raccoon box of the first image and the kangaroo box; the second image stays unreviewed
    for name in ("a", "c"):
        image_id = ids[0] if name == "a" else ids[2]
        page.goto(f"{server.url}/review/images/{image_id}")
        page.wait_for_selector("body[data-ready='1']")
        page.click(f"#box-list li[data-box-id='{boxes[name]}'] button.accept")
        page.wait_for_selector(f"#box-list li[data-box-id='{boxes[name]}'][data-status='accepted']")
    page.goto(f"{server.url}/collections/{cid}")
    page.select_option("#evaluate-boxes", "reviewed")
    page.click("#start-evaluate")
    page.wait_for_selector("tr.job[data-status='succeeded']", timeout=120000)
    page.reload()
    table = page.locator("#evaluation-table")
    headers = table.locator("thead th").all_text_contents()
    assert "CorLoc@0.5" in headers and "model_version_id" not in " ".join(headers)
    overall = table.locator("tr.overall").first.locator("td").all_text_contents()
    assert overall[2].startswith("reviewed") and overall[4] == "1.000" and overall[8] == "2"  # 2 reviewed images with ground truth
    classes = table.locator("tr.per-class").evaluate_all("rows => rows.map(r => r.dataset.class)")
    assert sorted(classes) == ["kangaroo", "raccoon"]
    page.locator("#evaluations").scroll_into_view_if_needed()
    docs_shot(page, "collection-evaluation-per-class")


def test_collection_delete_needs_its_name_and_token_revoke_asks_first(page: Any, server: Server, shared_dataset: Path) -> None:
    from worker.store.models import ApiToken, Collection

    cid, _cats, _ids, _boxes = make_collection(server, "doomed", [{"photo": dev_photos(shared_dataset, "raccoon", 1)[0], "tag": "raccoon"}])
    page.goto(f"{server.url}/collections/{cid}")
    assert page.is_disabled("#delete-collection-button")
    page.fill("#delete-confirm-name", "doome")
    assert page.is_disabled("#delete-collection-button")
    page.fill("#delete-confirm-name", "doomed")
    assert page.is_enabled("#delete-collection-button")
    docs_shot(page, "collection-delete-confirm")
    page.click("#delete-collection-button")
    page.wait_for_selector(".flash-ok")
    assert "Collection doomed deleted." in page.text_content(".flash-ok")
    with server_sessions(server)() as s:
        assert s.get(Collection, cid) is None

    page.goto(f"{server.url}/account")
    page.fill("input[name=name]", "ci-token")
    page.click("text=Create API token")
    page.wait_for_selector("#new-token")
    answers = iter([False, True])
    page.on("dialog", lambda dialog: dialog.accept() if next(answers) else dialog.dismiss())
    page.click("form.revoke-token button")
    with server_sessions(server)() as s:
        from sqlalchemy import select

        token = s.scalars(select(ApiToken).where(ApiToken.name == "ci-token")).one()
        assert token.revoked_at is None  # dismissed: nothing happened
    page.click("form.revoke-token button")
    page.wait_for_selector(".flash-ok")
    with server_sessions(server)() as s:
        assert s.get(ApiToken, token.id).revoked_at is not None
