"""Deleting a collection removes its rows and the blobs only it used; shared blobs and other collections stay."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.store.blob_refs import unreferenced_keys
from worker.store.bulk import insert_image_tags, insert_images, replace_boxes, upsert_concept_maps
from worker.store.collections_repo import CollectionNotFoundError, collection_blob_keys, delete_collection
from worker.store.models import Box, Category, Collection, ConceptMap, Evaluation, Image, ImageTag, Job, ModelVersion


def _count(session: Session, model: type, *where: object) -> int:
    return session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def _populate(session: Session, blobs, coll: int, cats: dict[str, int], contents: list[bytes], mv: int, tag: str) -> list[int]:  # type: ignore[no-untyped-def]
    """Images with real blob files, thumbs, tags, proposals and concept maps for model ``mv``."""
    rows = []
    for i, content in enumerate(contents):
        key = blobs.put_bytes(content, kind="images", suffix=".jpg")
        thumb = blobs.put_bytes(b"thumb" + content, kind="thumbs", suffix=".jpg")
        rows.append({"collection_id": coll, "sha256": key.split("/")[-1][:64], "rel_path": f"{tag}/{i}.jpg", "storage_key": key, "thumb_key": thumb})
    ids = insert_images(session, rows)
    insert_image_tags(session, [(i, cats["cat"]) for i in ids])
    replace_boxes(session, ids, mv, [{"image_id": i, "category_id": cats["cat"], "x1": 0, "y1": 0, "x2": 9, "y2": 9, "score": 0.5} for i in ids])
    upsert_concept_maps(session, [
        {
            "image_id": i, "category_id": cats["cat"], "model_version_id": mv,
            "raw_key": blobs.put_bytes(f"map-{tag}-{i}".encode(), kind="maps", suffix=".npy"),
            "overlay_key": blobs.put_bytes(f"overlay-{tag}-{i}".encode(), kind="overlays", suffix=".png"),
        }
        for i in ids
    ])
    session.commit()
    return ids


def test_delete_collection_removes_rows_and_unshared_blobs(runtime, session: Session, make_collection, make_model_version) -> None:  # type: ignore[no-untyped-def]
    blobs = runtime.blobs
    coll_a, cats_a = make_collection("a")
    coll_b, cats_b = make_collection("b")
    ckpt_shared = blobs.put_bytes(b"weights used by b", kind="checkpoints", suffix=".pt")
    ckpt_private = blobs.put_bytes(b"weights only a", kind="checkpoints", suffix=".pt")
    export_key = blobs.put_bytes(b"coco json", kind="exports", suffix=".json")
    mv_used_by_b = make_model_version(coll_a, "a-model-used-by-b", ckpt_shared)
    mv_private = make_model_version(coll_a, "a-model", ckpt_private)
    mv_b = make_model_version(coll_b, "b-model")

    ids_a = _populate(session, blobs, coll_a, cats_a, [b"shared photo", b"only in a 1", b"only in a 2"], mv_private, "a")
    ids_b = _populate(session, blobs, coll_b, cats_b, [b"shared photo", b"only in b"], mv_b, "b")
    # Collection b also has proposals from a's first model: that model version must survive.
    replace_boxes(session, [ids_b[1]], mv_used_by_b, [{"image_id": ids_b[1], "category_id": cats_b["cat"], "x1": 1, "y1": 1, "x2": 2, "y2": 2, "score": 0.1}])
    session.add(Job(collection_id=coll_a, kind="export", params={"fmt": "coco"}, result={"export_key": export_key, "n": 3}))
    session.add(Evaluation(collection_id=coll_a, model_version_id=mv_private, metrics={"corloc": 0.5}))
    session.commit()

    a_keys = set()
    for image in session.execute(select(Image).where(Image.collection_id == coll_a)).scalars():
        a_keys |= {image.storage_key, image.thumb_key}
    for cmap in session.execute(select(ConceptMap).where(ConceptMap.image_id.in_(ids_a))).scalars():
        a_keys |= {cmap.raw_key, cmap.overlay_key}
    b_keys = set()
    for image in session.execute(select(Image).where(Image.collection_id == coll_b)).scalars():
        b_keys |= {image.storage_key, image.thumb_key}
    for cmap in session.execute(select(ConceptMap).where(ConceptMap.image_id.in_(ids_b))).scalars():
        b_keys |= {cmap.raw_key, cmap.overlay_key}
    shared = a_keys & b_keys
    assert len(shared) == 2  # the same photo (and its thumbnail) imported into both

    report = delete_collection(session, blobs, coll_a)

    # Rows of a are gone, through the cascades.
    assert session.get(Collection, coll_a) is None
    assert _count(session, Image, Image.collection_id == coll_a) == 0
    assert _count(session, Box, Box.image_id.in_(ids_a)) == 0
    assert _count(session, ConceptMap, ConceptMap.image_id.in_(ids_a)) == 0
    assert _count(session, ImageTag, ImageTag.image_id.in_(ids_a)) == 0
    assert _count(session, Category, Category.collection_id == coll_a) == 0
    assert _count(session, Job, Job.collection_id == coll_a) == 0
    assert _count(session, Evaluation, Evaluation.collection_id == coll_a) == 0
    assert session.get(ModelVersion, mv_private) is None
    kept_mv = session.get(ModelVersion, mv_used_by_b)
    assert kept_mv is not None and kept_mv.collection_id is None

    # Blobs: a's own files gone, shared ones and b's kept.
    assert all(not blobs.exists(key) for key in a_keys - shared)
    assert all(blobs.exists(key) for key in b_keys)
    assert not blobs.exists(ckpt_private) and not blobs.exists(export_key)
    assert blobs.exists(ckpt_shared)
    assert (report.images, report.boxes, report.jobs, report.model_versions_deleted, report.model_versions_kept) == (3, 3, 1, 1, [mv_used_by_b])
    assert report.blobs_removed == len(a_keys - shared) + 2  # + private checkpoint + export
    assert report.blobs_kept == len(shared)  # the kept model version's checkpoint was never a candidate

    # Collection b is untouched.
    assert _count(session, Image, Image.collection_id == coll_b) == 2
    assert _count(session, Box, Box.image_id.in_(ids_b)) == 3
    assert _count(session, ConceptMap, ConceptMap.image_id.in_(ids_b)) == 2
    assert unreferenced_keys(session, b_keys) == set()

    with pytest.raises(CollectionNotFoundError):
        delete_collection(session, blobs, coll_a)


def test_delete_collection_removes_its_descriptor_codes_blobs(runtime, session: Session, make_collection, make_model_version) -> None:  # type: ignore[no-untyped-def]
    """An image's codes blob (named by every map row of the image) goes with the collection unless
    another collection's maps name the same content."""
    blobs = runtime.blobs
    coll_a, cats_a = make_collection("a")
    coll_b, cats_b = make_collection("b")
    mv_a, mv_b = make_model_version(coll_a, "a-model"), make_model_version(coll_b, "b-model")
    ids_a = _populate(session, blobs, coll_a, cats_a, [b"photo a1", b"photo a2"], mv_a, "a")
    (id_b,) = _populate(session, blobs, coll_b, cats_b, [b"photo b"], mv_b, "b")
    shared_codes = blobs.put_bytes(b"codes seen in both", kind="codes", suffix=".npy")
    private_codes = blobs.put_bytes(b"codes only in a", kind="codes", suffix=".npy")
    raw = blobs.put_bytes(b"dog map", kind="maps", suffix=".npy")
    upsert_concept_maps(session, [  # two maps of the first image share its codes
        {"image_id": ids_a[0], "category_id": cats_a["cat"], "model_version_id": mv_a, "raw_key": session.scalar(
            select(ConceptMap.raw_key).where(ConceptMap.image_id == ids_a[0])), "codes_key": private_codes},
        {"image_id": ids_a[0], "category_id": cats_a["dog"], "model_version_id": mv_a, "raw_key": raw, "codes_key": private_codes},
        {"image_id": ids_a[1], "category_id": cats_a["cat"], "model_version_id": mv_a, "raw_key": session.scalar(
            select(ConceptMap.raw_key).where(ConceptMap.image_id == ids_a[1])), "codes_key": shared_codes},
        {"image_id": id_b, "category_id": cats_b["cat"], "model_version_id": mv_b, "raw_key": session.scalar(
            select(ConceptMap.raw_key).where(ConceptMap.image_id == id_b)), "codes_key": shared_codes},
    ])
    session.commit()
    assert {private_codes, shared_codes} <= collection_blob_keys(session, coll_a)
    assert shared_codes in collection_blob_keys(session, coll_b) and private_codes not in collection_blob_keys(session, coll_b)

    delete_collection(session, blobs, coll_a)

    assert not blobs.exists(private_codes)
    assert blobs.exists(shared_codes)
    assert session.scalars(select(ConceptMap.codes_key).where(ConceptMap.image_id == id_b)).all() == [shared_codes]


def test_reference_check_scans_and_probes_alike(runtime, session: Session, make_collection, make_model_version, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Both strategies of ``referenced_keys`` (``IN`` probes, full column scan) find the same references."""
    from worker.store import blob_refs

    coll, cats = make_collection("a")
    ckpt = runtime.blobs.put_bytes(b"w", kind="checkpoints", suffix=".pt")
    mv = make_model_version(coll, "m", ckpt)
    _populate(session, runtime.blobs, coll, cats, [b"p1", b"p2"], mv, "a")
    export_key = runtime.blobs.put_bytes(b"zip", kind="exports", suffix=".zip")
    session.add(Job(collection_id=coll, kind="export", params={}, result={"files": [{"key": export_key}]}))
    session.commit()
    stray = runtime.blobs.put_bytes(b"nobody uses me", kind="maps", suffix=".npy")
    keys = select(Image.storage_key, Image.thumb_key, ConceptMap.raw_key, ConceptMap.overlay_key).join(ConceptMap, ConceptMap.image_id == Image.id)
    used = {ckpt, export_key} | {k for row in session.execute(keys) for k in row}
    assert len(used) == 10

    probed = blob_refs.referenced_keys(session, used | {stray})
    monkeypatch.setattr(blob_refs, "_SCAN_THRESHOLD", 0)
    scanned = blob_refs.referenced_keys(session, used | {stray})
    assert probed == scanned == used
    assert blob_refs.unreferenced_keys(session, used | {stray}) == {stray}
