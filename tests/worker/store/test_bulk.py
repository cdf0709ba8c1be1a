"""Bulk writes on SQLite and PostgreSQL: image dedup by hash, idempotent proposals, box stats, concept maps, categories."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.store.bulk import (
    insert_boxes,
    insert_image_tags,
    insert_images,
    insert_images_detailed,
    refresh_image_box_stats,
    replace_boxes,
    upsert_concept_maps,
)
from worker.store.collections_repo import CollectionNotFoundError, get_or_create_categories, get_or_create_category
from worker.store.models import Box, BoxSource, Category, ConceptMap, Image, ImageTag, ReviewStatus


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _count(session: Session, model: type) -> int:
    return session.execute(select(func.count()).select_from(model)).scalar_one()


def _box(image_id: int, category_id: int, score: float | None, **extra: object) -> dict:
    return {"image_id": image_id, "category_id": category_id, "x1": 1.0, "y1": 2.0, "x2": 30.0, "y2": 40.0, "score": score, **extra}


def test_insert_images_dedups_by_hash_on_reimport(session: Session, make_collection) -> None:  # type: ignore[no-untyped-def]
    coll, _ = make_collection("a")
    other, _ = make_collection("b")
    rows = [{"collection_id": coll, "sha256": sha(f"f{i}"), "rel_path": f"x/{i}.jpg", "width": 10, "height": 20} for i in range(5)]
    first = insert_images_detailed(session, rows)
    session.commit()
    assert first.created == [True] * 5 and len(set(first.ids)) == 5

    # The same files again (new names), one new file, and one file twice in the same call.
    again = [{**row, "rel_path": "renamed/" + row["rel_path"]} for row in rows] + [
        {"collection_id": coll, "sha256": sha("new"), "rel_path": "new.jpg"},
        {"collection_id": coll, "sha256": sha("new"), "rel_path": "new-copy.jpg"},
    ]
    second = insert_images_detailed(session, again)
    session.commit()
    assert second.ids[:5] == first.ids
    assert second.created == [False] * 5 + [True, False]
    assert second.ids[5] == second.ids[6]
    assert (second.n_created, second.n_duplicates) == (1, 6)
    assert _count(session, Image) == 6
    # The stored row keeps its first path: a re-import never rewrites an image.
    assert session.execute(select(Image.rel_path).where(Image.id == first.ids[0])).scalar_one() == "x/0.jpg"

    # The same content in another collection is a separate image.
    ids_b = insert_images(session, [{"collection_id": other, "sha256": sha("f0"), "rel_path": "x/0.jpg"}])
    session.commit()
    assert ids_b[0] not in first.ids
    assert _count(session, Image) == 7


def test_insert_images_refuses_bad_rows_and_writes_nothing(session: Session, make_collection) -> None:  # type: ignore[no-untyped-def]
    coll, _ = make_collection("a")
    good = {"collection_id": coll, "sha256": sha("ok"), "rel_path": "ok.jpg"}
    bad_rows = [
        ({"collection_id": coll, "sha256": "ABC", "rel_path": "x.jpg"}, "sha256"),
        ({"collection_id": coll, "sha256": sha("x"), "rel_path": ""}, "rel_path is required"),
        ({"collection_id": coll, "sha256": sha("x"), "rel_path": "x.jpg", "status": "failed"}, "failure_reason"),
        ({"collection_id": coll, "sha256": sha("x"), "rel_path": "x.jpg", "storage_key": "../../etc/passwd"}, "not a blob key"),
        ({"collection_id": coll, "sha256": sha("x"), "rel_path": "x.jpg", "width": 0}, "width"),
        ({"collection_id": coll, "sha256": sha("x"), "rel_path": "x.jpg", "colour": "red"}, "unknown fields"),
    ]
    for bad, message in bad_rows:
        with pytest.raises(ValueError, match=message):
            insert_images(session, [good, bad])
    session.commit()
    assert _count(session, Image) == 0


def test_failed_image_keeps_its_reason(session: Session, make_collection) -> None:  # type: ignore[no-untyped-def]
    coll, _ = make_collection("a")
    (image_id,) = insert_images(
        session, [{"collection_id": coll, "sha256": sha("bad"), "rel_path": "bad.jpg", "status": "failed", "failure_reason": "truncated JPEG"}])
    session.commit()
    image = session.get(Image, image_id)
    assert image is not None and image.status.value == "failed" and image.failure_reason == "truncated JPEG"


def test_image_tags_are_deduplicated(session: Session, make_collection, make_images) -> None:  # type: ignore[no-untyped-def]
    coll, cats = make_collection("a")
    ids = make_images(coll, 3)
    pairs = [(i, cats["cat"]) for i in ids] + [(ids[0], cats["dog"]), (ids[0], cats["cat"])]
    assert insert_image_tags(session, pairs) == 4
    insert_image_tags(session, pairs)
    session.commit()
    assert _count(session, ImageTag) == 4


def test_replace_boxes_is_idempotent_and_spares_reviewed_human_and_gt(  # type: ignore[no-untyped-def]
    session: Session, make_collection, make_images, make_model_version
) -> None:
    coll, cats = make_collection("a")
    img1, img2, img3 = make_images(coll, 3)
    mv, other_mv = make_model_version(coll, "mv1"), make_model_version(coll, "mv2")
    cat = cats["cat"]

    insert_boxes(session, [
        _box(img1, cat, None, source="ground_truth", status="accepted"),
        # reviewed boxes elsewhere in the image (one in the proposals' place would suppress them)
        _box(img1, cat, None, source="human", status="accepted", x1=200.0, x2=230.0),
        _box(img1, cat, 0.9, source="cam", status="accepted", model_version_id=mv, x1=300.0, x2=330.0),
        _box(img1, cat, 0.8, source="cam", status="rejected", model_version_id=mv, x1=400.0, x2=430.0),
        _box(img1, cat, 0.7, source="cam", status="proposed", model_version_id=other_mv),
        _box(img3, cat, 0.6, source="cam", status="proposed", model_version_id=mv),
    ])
    proposals = [_box(img1, cat, 0.5), _box(img1, cat, 0.3), _box(img2, cat, 0.4)]
    assert replace_boxes(session, [img1, img2], mv, proposals) == 3
    session.commit()
    before = _count(session, Box)
    assert replace_boxes(session, [img1, img2], mv, proposals) == 3
    session.commit()
    assert _count(session, Box) == before == 9

    def kinds(image_id: int) -> list[tuple[str, str, int | None]]:
        rows = session.execute(select(Box.source, Box.status, Box.model_version_id).where(Box.image_id == image_id))
        return sorted((s.value, st.value, m) for s, st, m in rows)

    assert kinds(img1) == sorted([
        ("ground_truth", "accepted", None), ("human", "accepted", None), ("cam", "accepted", mv), ("cam", "rejected", mv),
        ("cam", "proposed", other_mv), ("cam", "proposed", mv), ("cam", "proposed", mv),
    ])
    assert kinds(img3) == [("cam", "proposed", mv)]  # not among the replaced images

    # A re-run with fewer boxes replaces, an empty re-run clears this model's proposals.
    replace_boxes(session, [img1, img2], mv, [_box(img2, cat, 0.2)])
    session.commit()
    assert session.execute(select(func.count()).where(Box.image_id == img1, Box.status == "proposed", Box.model_version_id == mv)).scalar_one() == 0

    # Stats: not ground truth, not rejected. img1 now: human(None), cam accepted .9, other_mv .7.
    session.expire_all()
    image1, image2, image3 = (session.get(Image, i) for i in (img1, img2, img3))
    assert (image1.n_boxes, image1.min_score, image1.max_score) == (3, pytest.approx(0.7), pytest.approx(0.9))
    assert (image2.n_boxes, image2.min_score, image2.max_score) == (1, pytest.approx(0.2), pytest.approx(0.2))
    assert (image3.n_boxes, image3.min_score, image3.max_score) == (1, pytest.approx(0.6), pytest.approx(0.6))


def test_replace_boxes_refuses_rows_outside_its_scope(session: Session, make_collection, make_images, make_model_version) -> None:  # type: ignore[no-untyped-def]
    coll, cats = make_collection("a")
    img1, img2 = make_images(coll, 2)
    mv = make_model_version(coll)
    cat = cats["cat"]
    replace_boxes(session, [img1], mv, [_box(img1, cat, 0.9)])
    session.commit()
    with pytest.raises(ValueError, match="not among the images"):
        replace_boxes(session, [img1], mv, [_box(img2, cat, 0.5)])
    with pytest.raises(ValueError, match="CAM proposals only"):
        replace_boxes(session, [img1], mv, [_box(img1, cat, 0.5, source="human")])
    with pytest.raises(ValueError, match="x1 <= x2"):
        replace_boxes(session, [img1], mv, [{**_box(img1, cat, 0.5), "x1": 50.0}])
    with pytest.raises(ValueError, match="finite"):
        replace_boxes(session, [img1], mv, [_box(img1, cat, 0.5), {**_box(img1, cat, 0.5), "y2": float("nan")}])
    with pytest.raises(ValueError, match="score must be finite"):
        replace_boxes(session, [img1], mv, [_box(img1, cat, float("inf"))])
    session.commit()  # a caller that commits after the error still loses nothing
    assert session.execute(select(Box.score)).scalars().all() == [pytest.approx(0.9)]


def test_refresh_stats_of_image_without_boxes(session: Session, make_collection, make_images, make_model_version) -> None:  # type: ignore[no-untyped-def]
    coll, cats = make_collection("a")
    (img,) = make_images(coll, 1)
    mv = make_model_version(coll)
    replace_boxes(session, [img], mv, [_box(img, cats["cat"], 0.5)])
    session.commit()
    session.execute(Box.__table__.delete())
    refresh_image_box_stats(session, [img])
    session.commit()
    image = session.get(Image, img)
    assert (image.n_boxes, image.min_score, image.max_score) == (0, None, None)


def test_upsert_concept_maps_overwrites_per_triple(session: Session, make_collection, make_images, make_model_version, runtime) -> None:  # type: ignore[no-untyped-def]
    coll, cats = make_collection("a")
    img1, img2 = make_images(coll, 2)
    mv = make_model_version(coll)
    k1, k2, k3 = (runtime.blobs.put_bytes(bytes([i]), kind="maps", suffix=".npy") for i in range(3))
    overlay = runtime.blobs.put_bytes(b"png", kind="overlays", suffix=".png")
    upsert_concept_maps(session, [
        {"image_id": img1, "category_id": cats["cat"], "model_version_id": mv, "raw_key": k1},
        {"image_id": img2, "category_id": cats["cat"], "model_version_id": mv, "raw_key": k1, "overlay_key": overlay},
    ])
    session.commit()
    written = upsert_concept_maps(session, [
        {"image_id": img1, "category_id": cats["cat"], "model_version_id": mv, "raw_key": k2, "overlay_key": overlay},
        {"image_id": img1, "category_id": cats["cat"], "model_version_id": mv, "raw_key": k3, "overlay_key": overlay},
    ])
    session.commit()
    assert written == 1
    rows = session.execute(select(ConceptMap.image_id, ConceptMap.raw_key, ConceptMap.overlay_key).order_by(ConceptMap.image_id)).all()
    assert [tuple(r) for r in rows] == [(img1, k3, overlay), (img2, k1, overlay)]
    with pytest.raises(ValueError, match="not a blob key"):
        upsert_concept_maps(session, [{"image_id": img1, "category_id": cats["cat"], "model_version_id": mv, "raw_key": "/tmp/x.npy"}])


def test_upsert_concept_maps_sets_and_replaces_the_codes_key(session: Session, make_collection, make_images, make_model_version, runtime) -> None:  # type: ignore[no-untyped-def]
    """``codes_key`` is optional (``None`` when absent) and a re-run overwrites it like the other keys."""
    coll, cats = make_collection("a")
    (img,) = make_images(coll, 1)
    mv = make_model_version(coll)
    raw = runtime.blobs.put_bytes(b"map", kind="maps", suffix=".npy")
    codes_a, codes_b = (runtime.blobs.put_bytes(bytes([i]), kind="codes", suffix=".npy") for i in range(2))

    def stored() -> list[tuple[int, str | None]]:
        rows = session.execute(select(ConceptMap.category_id, ConceptMap.codes_key).order_by(ConceptMap.category_id)).all()
        return [tuple(r) for r in rows]

    upsert_concept_maps(session, [{"image_id": img, "category_id": cats[c], "model_version_id": mv, "raw_key": raw, "codes_key": codes_a}
                                  for c in ("cat", "dog")])  # one codes blob shared by the image's maps
    session.commit()
    assert stored() == [(cats["cat"], codes_a), (cats["dog"], codes_a)]
    upsert_concept_maps(session, [{"image_id": img, "category_id": cats["cat"], "model_version_id": mv, "raw_key": raw, "codes_key": codes_b},
                                  {"image_id": img, "category_id": cats["dog"], "model_version_id": mv, "raw_key": raw}])
    session.commit()
    assert stored() == [(cats["cat"], codes_b), (cats["dog"], None)]
    with pytest.raises(ValueError, match="not a blob key"):
        upsert_concept_maps(session, [{"image_id": img, "category_id": cats["cat"], "model_version_id": mv, "raw_key": raw, "codes_key": "../x.npy"}])


def test_categories_keep_stable_ids(session: Session, make_collection) -> None:  # type: ignore[no-untyped-def]
    coll, cats = make_collection("a", categories=("zebra", "ant"))
    assert cats["zebra"] < cats["ant"]  # ids follow the order given, not the alphabet
    again = get_or_create_categories(session, coll, [" ant ", "bee", "zebra", "bee"])
    session.commit()
    assert again == {"ant": cats["ant"], "bee": again["bee"], "zebra": cats["zebra"]}
    assert again["bee"] > cats["ant"]
    assert get_or_create_category(session, coll, "bee").id == again["bee"]
    assert _count(session, Category) == 3
    for bad in ("", "   ", "x" * 201, None):
        with pytest.raises(ValueError):
            get_or_create_categories(session, coll, [bad])  # type: ignore[list-item]
    with pytest.raises(CollectionNotFoundError):
        get_or_create_categories(session, 987654, ["cat"])


def test_insert_boxes_refuses_bad_rows_and_writes_nothing(session: Session, make_collection, make_images) -> None:  # type: ignore[no-untyped-def]
    coll, cats = make_collection("a")
    (img,) = make_images(coll, 1)
    good = _box(img, cats["cat"], 0.5, source="ground_truth", status="accepted")
    for bad, message in [
        ({**good, "source": "robot"}, "bad source"),
        ({**good, "status": "maybe"}, "bad source 'ground_truth' or status 'maybe'"),
        ({**good, "x1": "left"}, "must be numbers"),
        ({**good, "score": "high"}, "score must be a number"),
        ({k: v for k, v in good.items() if k != "y2"}, "y2 is required"),
        ({**good, "image_id": None}, "image_id and category_id are required"),
        ({**good, "angle": 3}, "unknown fields"),
    ]:
        with pytest.raises(ValueError, match=message):
            insert_boxes(session, [good, bad])
    session.commit()
    assert _count(session, Box) == 0
    assert insert_boxes(session, [good, {**good, "source": BoxSource.human, "status": ReviewStatus.edited}]) == 2
    session.commit()
    assert sorted(s.value for s in session.execute(select(Box.source)).scalars()) == ["ground_truth", "human"]


def test_replace_boxes_leaves_out_proposals_that_duplicate_a_reviewed_box(session: Session, make_collection, make_images,  # type: ignore[no-untyped-def]
                                                                          make_model_version) -> None:
    coll, cats = make_collection("reviewed")
    image_id = make_images(coll, 1)[0]
    mv = make_model_version(coll)
    insert_boxes(session, [
        {**_box(image_id, cats["cat"], None), "source": BoxSource.human, "status": ReviewStatus.accepted},
        {"image_id": image_id, "category_id": cats["cat"], "x1": 100.0, "y1": 100.0, "x2": 140.0, "y2": 140.0, "score": 0.4,
         "source": BoxSource.cam, "status": ReviewStatus.rejected, "model_version_id": mv},
    ])
    written = replace_boxes(session, [image_id], mv, [
        {**_box(image_id, cats["cat"], 0.9), "x1": 2.0},  # IoU ~0.96 with the accepted box: left out
        {"image_id": image_id, "category_id": cats["cat"], "x1": 101.0, "y1": 100.0, "x2": 140.0, "y2": 141.0, "score": 0.5},  # rejected
        _box(image_id, cats["dog"], 0.8),  # same place, another category: kept
        {"image_id": image_id, "category_id": cats["cat"], "x1": 1.0, "y1": 2.0, "x2": 12.0, "y2": 14.0, "score": 0.3},  # IoU ~0.1: kept
    ])
    session.commit()
    assert written == 2
    proposed = session.execute(select(Box.category_id, Box.x2).where(Box.status == ReviewStatus.proposed)).all()
    assert sorted(proposed) == sorted([(cats["dog"], 30.0), (cats["cat"], 12.0)])
