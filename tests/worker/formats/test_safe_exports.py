"""Exports safe to train on, checked with their real consumers: pycocotools, Ultralytics'
``check_det_dataset`` (in a subprocess with the network blocked), and a VOC reader
(``xml.etree`` plus ``ImageSets/Main``). Unreviewed images are never exported as negatives
by default; EXIF-rotated photos are written upright."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
import zipfile
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from PIL import Image as PILImage
from pycocotools.coco import COCO

if TYPE_CHECKING:
    from tests.worker.formats.scene import Built, Factory
from worker.formats import FormatError, download_name, export_collection
from worker.store.models import BoxSource, ReviewStatus

REVIEWED = {"cats/images/c1.jpg", "cats/images/c2.jpg", "dogs/images/d1.jpg", "dogs/images/empty.jpg"}
UNREVIEWED = "dogs/images/d2.jpg"  # holds a proposed dog box (and ground truth) nobody decided on


def _export(runtime, built: Built, fmt: str, out: Path, **kw) -> dict:  # type: ignore[no-untyped-def]
    with runtime.sessions() as session:
        return export_collection(session, runtime.blobs, built.collection_id, fmt, out, **kw)


def _unzip(path: Path, into: Path) -> Path:
    with zipfile.ZipFile(path) as archive:
        archive.extractall(into)
    return into


def test_unreviewed_image_is_not_exported_as_a_negative_by_default(runtime, scene: Built, tmp_path: Path) -> None:
    _export(runtime, scene, "coco", tmp_path / "c.json")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "c.json"))
    files = {img["file_name"] for img in coco.dataset["images"]}
    assert files == REVIEWED  # d2 is not there as an image with no objects
    empty_id = next(i["id"] for i in coco.dataset["images"] if i["file_name"] == "dogs/images/empty.jpg")
    assert coco.getAnnIds(imgIds=[empty_id]) == []  # the image marked "no objects" is a real negative

    _export(runtime, scene, "yolo", tmp_path / "y.zip")
    yolo = _unzip(tmp_path / "y.zip", tmp_path / "y")
    assert not (yolo / "labels" / "dogs__images__d2.txt").exists()
    assert not (yolo / "images" / "dogs__images__d2.jpg").exists()
    assert (yolo / "labels" / "dogs__images__empty.txt").read_text() == ""

    voc = tmp_path / "v"
    _export(runtime, scene, "voc", voc)
    assert not (voc / "Annotations" / "dogs__images__d2.xml").exists()
    assert "dogs__images__d2" not in (voc / "ImageSets" / "Main" / "trainval.txt").read_text().split()

    # every proposal ("all"): those of reviewed images only; d2's proposed dog stays out
    summary = _export(runtime, scene, "coco-results", tmp_path / "r.json", status="all")
    results = json.loads((tmp_path / "r.json").read_text())
    assert summary["annotations"] == len(results) == 5
    assert all(r["image_id"] != scene.image_ids[UNREVIEWED] for r in results)

    # asked for explicitly, the unreviewed image comes along
    summary = _export(runtime, scene, "coco", tmp_path / "all.json", include_unreviewed=True)
    assert summary["include_unreviewed"] is True and summary["images"] == 5
    assert UNREVIEWED in {img["file_name"] for img in json.loads((tmp_path / "all.json").read_text())["images"]}


def test_an_image_counts_as_reviewed_from_any_decision_on_its_boxes(runtime, factory: Factory, tmp_path: Path) -> None:
    """Rejecting the only proposal makes an image reviewed (a negative); a path that records no
    review state still counts through the boxes' own state."""
    built = factory.collection("decided", ["cat"], [("a.jpg", 40, 30), ("b.jpg", 40, 30), ("c.jpg", 40, 30)])
    factory.boxes(built, [("a.jpg", "cat", (1, 1, 20, 20), 0.9, BoxSource.cam, ReviewStatus.rejected),
                          ("b.jpg", "cat", (1, 1, 20, 20), 0.9, BoxSource.cam, ReviewStatus.proposed)])
    summary = _export(runtime, built, "coco", tmp_path / "d.json")
    data = json.loads((tmp_path / "d.json").read_text())
    assert [i["file_name"] for i in data["images"]] == ["a.jpg"] and data["annotations"] == []
    assert summary["images"] == 1


def _check_det_dataset(yaml_path: Path, config_dir: Path, cwd: Path) -> dict:
    """Run Ultralytics' own dataset check on ``yaml_path`` in a fresh interpreter whose sockets
    refuse to connect and whose download helpers raise: the check must work offline."""
    config_dir.mkdir(parents=True, exist_ok=True)
    # check_font() looks in the config dir before downloading a font; any font file will do
    fonts = [Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")]
    font = next((f for f in fonts if f.exists()), None)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        (config_dir / name).write_bytes(font.read_bytes() if font else b"\0")
    script = textwrap.dedent(
        """
        import json, socket, sys

        def refuse(*args, **kwargs):
            raise OSError("network use during the dataset check")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        from ultralytics.utils import downloads, checks
        downloads.safe_download = refuse
        downloads.attempt_download_asset = refuse
        from ultralytics.data.utils import check_det_dataset

        data = check_det_dataset(sys.argv[1], autodownload=False)
        print(json.dumps({k: (str(v) if k in ("path", "train", "val") else v) for k, v in data.items()
                          if k in ("path", "train", "val", "nc", "names")}))
        """
    )
    env = {**os.environ, "YOLO_CONFIG_DIR": str(config_dir), "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False"}
    result = subprocess.run([sys.executable, "-c", script, str(yaml_path)], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_yolo_export_passes_ultralytics_check_det_dataset_from_any_folder(runtime, scene: Built, tmp_path: Path) -> None:
    summary = _export(runtime, scene, "yolo", tmp_path / "y.zip", val_fraction=0.5, seed=7)
    root = _unzip(tmp_path / "y.zip", tmp_path / "unpacked" / "dataset")
    assert summary["train_images"] == 2 and summary["val_images"] == 2 and summary["seed"] == 7
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    data = _check_det_dataset(root / "data.yaml", tmp_path / "ultralytics-config", cwd=elsewhere)
    assert Path(data["path"]) == root.resolve()  # the yaml's folder, not the working directory
    assert Path(data["train"]) == (root / "images" / "train").resolve()
    assert Path(data["val"]) == (root / "images" / "val").resolve()
    assert data["nc"] == 2 and data["names"] == {"0": "cat", "1": "dog"}
    assert "path" not in yaml.safe_load((root / "data.yaml").read_text())

    # every image has its label file in the matching subset; train and val are disjoint
    train = {p.stem for p in (root / "images" / "train").iterdir()}
    val = {p.stem for p in (root / "images" / "val").iterdir()}
    assert train and val and not train & val and len(train | val) == 4
    for subset, stems in (("train", train), ("val", val)):
        assert {p.stem for p in (root / "labels" / subset).iterdir()} == stems


def test_yolo_split_is_seeded_and_checked(runtime, scene: Built, tmp_path: Path) -> None:
    def val_of(seed: int, name: str) -> set[str]:
        out = tmp_path / name
        _export(runtime, scene, "yolo", out, val_fraction=0.25, seed=seed)
        return {p.name for p in (out / "images" / "val").iterdir()}

    first, again = val_of(3, "a"), val_of(3, "b")
    assert first == again and len(first) == 1
    assert any(val_of(s, f"s{s}") != first for s in range(4, 12))  # another seed draws another image
    no_split = tmp_path / "plain"
    _export(runtime, scene, "yolo", no_split)
    data = yaml.safe_load((no_split / "data.yaml").read_text())
    assert data["train"] == data["val"] == "images" and (no_split / "images" / "cats__images__c1.jpg").exists()
    assert "val is the training images here" in (no_split / "data.yaml").read_text()
    with runtime.sessions() as session:
        with pytest.raises(FormatError, match=r"val_fraction must be in \[0, 1\)"):
            export_collection(session, runtime.blobs, scene.collection_id, "yolo", tmp_path / "bad", val_fraction=1.5)
        with pytest.raises(FormatError, match="split .* is for yolo and voc"):
            export_collection(session, runtime.blobs, scene.collection_id, "coco", tmp_path / "bad.json", val_fraction=0.2)


def test_voc_export_is_the_standard_layout(runtime, scene: Built, tmp_path: Path) -> None:
    summary = _export(runtime, scene, "voc", tmp_path / "v.zip", val_fraction=0.5, seed=1)
    root = _unzip(tmp_path / "v.zip", tmp_path / "v")
    sets = {name: (root / "ImageSets" / "Main" / f"{name}.txt").read_text().split() for name in ("train", "val", "trainval")}
    assert len(sets["train"]) == summary["train_images"] == 2 and len(sets["val"]) == 2
    assert sorted(sets["trainval"]) == sorted(sets["train"] + sets["val"]) and not set(sets["train"]) & set(sets["val"])
    names = {"cat", "dog"}
    objects = 0
    for stem in sets["trainval"]:  # a VOC reader: ImageSets id -> Annotations/<id>.xml -> <folder>/<filename>
        tree = ET.parse(root / "Annotations" / f"{stem}.xml").getroot()
        image_file = root / tree.findtext("folder") / tree.findtext("filename")
        assert image_file.is_file() and image_file.stem == stem
        with PILImage.open(image_file) as img:
            assert (int(tree.findtext("size/width")), int(tree.findtext("size/height"))) == img.size
        for obj in tree.findall("object"):
            objects += 1
            assert obj.findtext("name") in names
            xmin, ymin, xmax, ymax = (obj.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax"))
            assert all(v.isdigit() for v in (xmin, ymin, xmax, ymax)), (xmin, ymin, xmax, ymax)  # integer pixels
            assert 1 <= int(xmin) < int(xmax) <= img.size[0] and 1 <= int(ymin) < int(ymax) <= img.size[1]
    assert objects == summary["annotations"] == 4


def _rotated_photo() -> tuple[bytes, tuple[int, int]]:
    """A JPEG stored 120x80 with EXIF orientation 6 (displayed 80x120, rotated 90° clockwise);
    in the displayed image a red square sits at the top left (x 5..35, y 5..35)."""
    displayed = PILImage.new("RGB", (80, 120), (0, 0, 255))
    displayed.paste((255, 0, 0), (5, 5, 35, 35))
    stored = displayed.transpose(PILImage.Transpose.ROTATE_90)  # what a camera held sideways writes
    exif = PILImage.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue(), displayed.size


@pytest.mark.parametrize("fmt", ["yolo", "voc"])
def test_exif_rotated_photo_is_exported_upright(runtime, tmp_path: Path, fmt: str) -> None:
    import hashlib

    from worker.store.models import Box, Category, Collection, Image

    data, (width, height) = _rotated_photo()
    with runtime.sessions() as session:
        coll = Collection(name=f"rotated-{fmt}")
        session.add(coll)
        session.flush()
        cat = Category(collection_id=coll.id, name="square")
        session.add(cat)
        session.flush()
        key = runtime.blobs.put_bytes(data, kind="images", suffix=".jpg")
        image = Image(collection_id=coll.id, sha256=hashlib.sha256(data).hexdigest(), rel_path="phone/IMG_1.jpg", storage_key=key,
                      width=width, height=height)  # the importer stores the displayed size
        session.add(image)
        session.flush()
        session.add(Box(image_id=image.id, category_id=cat.id, x1=5, y1=5, x2=35, y2=35, score=0.9, source=BoxSource.cam,
                        status=ReviewStatus.accepted))
        session.commit()
        summary = export_collection(session, runtime.blobs, coll.id, fmt, tmp_path / "out")
    assert summary["images_reencoded"] == 1
    folder = "images" if fmt == "yolo" else "JPEGImages"
    exported = tmp_path / "out" / folder / "phone__IMG_1.jpg"
    with PILImage.open(exported) as img:  # read as a reader that ignores EXIF does
        assert img.size == (width, height) and img.getexif().get(0x0112, 1) == 1
        pixels = img.convert("RGB")
    if fmt == "voc":
        tree = ET.parse(tmp_path / "out" / "Annotations" / "phone__IMG_1.xml").getroot()
        assert (int(tree.findtext("size/width")), int(tree.findtext("size/height"))) == (width, height)
        box = [int(tree.findtext(f"object/bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
    else:
        _cls, cx, cy, w, h = (float(v) for v in (tmp_path / "out" / "labels" / "phone__IMG_1.txt").read_text().split())
        box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
    centre = pixels.getpixel((int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)))
    assert centre[0] > 200 and centre[2] < 60, centre  # the box is on the red square in the exported pixels


def test_an_upright_photo_is_copied_byte_for_byte(runtime, scene: Built, tmp_path: Path) -> None:
    summary = _export(runtime, scene, "voc", tmp_path / "v")
    assert summary["images_reencoded"] == 0 and summary["image_files"] == 4


def test_voc_images_are_jpeg_named_by_their_id(runtime, factory: Factory, tmp_path: Path) -> None:
    """VOC readers open ``JPEGImages/<id>.jpg``: a PNG with transparency becomes a JPEG of the same size."""
    import hashlib

    from worker.store.models import Box, Category, Collection, Image

    buffer = io.BytesIO()
    PILImage.new("RGBA", (30, 20), (255, 0, 0, 0)).save(buffer, format="PNG")
    data = buffer.getvalue()
    with runtime.sessions() as session:
        coll = Collection(name="pngs")
        session.add(coll)
        session.flush()
        cat = Category(collection_id=coll.id, name="thing")
        session.add(cat)
        session.flush()
        image = Image(collection_id=coll.id, sha256=hashlib.sha256(data).hexdigest(), rel_path="shots/a.png",
                      storage_key=runtime.blobs.put_bytes(data, kind="images", suffix=".png"), width=30, height=20)
        session.add(image)
        session.flush()
        session.add(Box(image_id=image.id, category_id=cat.id, x1=2, y1=2, x2=10, y2=10, score=None, source=BoxSource.human,
                        status=ReviewStatus.accepted))
        session.commit()
        summary = export_collection(session, runtime.blobs, coll.id, "voc", tmp_path / "v")
    assert summary["images_reencoded"] == 1
    [stem] = (tmp_path / "v" / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    tree = ET.parse(tmp_path / "v" / "Annotations" / f"{stem}.xml").getroot()
    assert tree.findtext("filename") == f"{stem}.jpg" and tree.findtext("path") == "shots/a.png"
    with PILImage.open(tmp_path / "v" / "JPEGImages" / f"{stem}.jpg") as img:
        assert img.format == "JPEG" and img.size == (30, 20) and img.getpixel((5, 5)) == pytest.approx((255, 255, 255), abs=3)


def test_download_name() -> None:
    assert download_name("animals", "yolo", date(2026, 11, 30)) == "animals-yolo-20261130.zip"
    assert download_name("my pets\r\nX", "coco", date(2026, 1, 2)) == "my_pets_X-coco-20260102.json"
    with pytest.raises(FormatError):
        download_name("a", "csv")
