"""Readers of ground-truth files: COCO JSON, Pascal VOC XML folders, YOLO txt folders.

Each reader yields :class:`GtRecord` (one image's boxes, with the paths that may name the image)
and never raises on a bad file: problems are put on the record and reported per file.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

VOC_ANNOTATION_DIRS = {"annotations", "annotation", "annots", "annot", "xml", "xmls", "labels"}
YOLO_NAME_FILES = ("data.yaml", "data.yml", "dataset.yaml", "classes.txt", "obj.names", "classes.names", "labels.txt")


@dataclass
class GtBox:
    """One box: category ``name`` and ``coords``, xyxy pixels, or ``(cx, cy, w, h)`` in 0..1 when ``normalised``."""

    name: str
    coords: tuple[float, float, float, float]
    normalised: bool = False


@dataclass
class GtRecord:
    """The ground truth of one image as read from a file.

    ``candidates``: paths that may name the image, best first (relative paths, bare names, or
    foreign absolute paths); ``stem_only``: match by name without extension (YOLO).
    ``size``: ``(width, height)`` stated in the file, ``None`` when not stated.
    """

    source: str
    candidates: list[str]
    boxes: list[GtBox] = field(default_factory=list)
    size: tuple[int, int] | None = None
    stem_only: bool = False
    problems: list[str] = field(default_factory=list)  # items not imported, with the reason
    notes: list[str] = field(default_factory=list)  # imported, but worth a warning
    fatal: str | None = None


def _posix_rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


# -- COCO ---------------------------------------------------------------------------------
def read_coco(path: Path) -> Iterator[GtRecord]:
    """Records of a COCO detection JSON (``bbox`` xywh pixels); ``file_name`` names the image."""
    try:
        with path.open("r", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        yield GtRecord(source=path.name, candidates=[], fatal=f"not a readable COCO JSON file: {exc}")
        return
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        yield GtRecord(source=path.name, candidates=[], fatal="not a COCO detection file (no 'images' list)")
        return
    names = {c.get("id"): str(c.get("name", "")).strip() for c in data.get("categories") or [] if isinstance(c, dict)}
    by_image: dict[object, list[dict]] = defaultdict(list)
    orphans = 0
    image_ids = {img.get("id") for img in data["images"] if isinstance(img, dict)}
    for ann in data.get("annotations") or []:
        if isinstance(ann, dict) and ann.get("image_id") in image_ids:
            by_image[ann.get("image_id")].append(ann)
        else:
            orphans += 1
    if orphans:
        yield GtRecord(source=path.name, candidates=[], fatal=f"{orphans} annotation(s) name an image id missing from 'images'")
    for index, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not img.get("file_name"):
            yield GtRecord(source=f"{path.name}: images[{index}]", candidates=[], fatal="image entry without file_name")
            continue
        file_name = str(img["file_name"])
        record = GtRecord(source=file_name, candidates=[file_name])
        try:
            record.size = (int(img.get("width") or 0), int(img.get("height") or 0))
        except (TypeError, ValueError):
            record.notes.append(f"bad width/height {img.get('width')!r}x{img.get('height')!r}; the image's stored size is used")
        for ann in by_image.pop(img.get("id"), []):
            name = names.get(ann.get("category_id"))
            if not name:
                record.problems.append(f"annotation {ann.get('id')}: category id {ann.get('category_id')!r} is not in 'categories'")
                continue
            bbox = ann.get("bbox")
            try:
                x, y, w, h = (float(v) for v in bbox)  # type: ignore[union-attr]  # not four numbers: reported below
            except (TypeError, ValueError):
                record.problems.append(f"annotation {ann.get('id')}: bad bbox {bbox!r}")
                continue
            record.boxes.append(GtBox(name, (x, y, x + w, y + h)))
        yield record


# -- Pascal VOC -----------------------------------------------------------------------------
def _voc_candidates(rel_xml: str, filename: str | None, folder: str | None, foreign_path: str | None) -> tuple[list[str], bool]:
    parts = PurePosixPath(rel_xml).parts
    parent = list(parts[:-1])
    stem = PurePosixPath(parts[-1]).stem
    out: list[str] = []
    name = filename or None
    if parent and parent[-1].lower() in VOC_ANNOTATION_DIRS:
        base = parent[:-1]
        if name:
            out += ["/".join([*base, "images", name]), "/".join([*base, "JPEGImages", name])]
            if folder:
                out.append("/".join([*base, folder, name]))
    if name:
        out.append("/".join([*parent, name]))
    if foreign_path:
        out.append(foreign_path.replace("\\", "/"))
    if name:
        out.append(name)
    if not out:
        return ["/".join([*parent, stem])], True
    return out, False


def read_voc(root: Path) -> Iterator[GtRecord]:
    """Records of every ``*.xml`` below ``root`` (or of ``root`` itself when it is a file).

    The image is named by the file's location (``X/annotations/a.xml`` -> ``X/images/<filename>``),
    ``<filename>``, ``<path>`` (often from another machine) and finally the xml's own stem.
    """
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix.lower() == ".xml" and p.is_file())
    base = root.parent if root.is_file() else root
    for xml_path in files:
        rel = _posix_rel(xml_path, base)
        try:
            tree = ET.parse(xml_path)
        except (ET.ParseError, OSError) as exc:
            yield GtRecord(source=rel, candidates=[], fatal=f"not readable XML: {exc}")
            continue
        node = tree.getroot()
        if node.tag != "annotation":
            yield GtRecord(source=rel, candidates=[], fatal=f"not a Pascal VOC file (root element <{node.tag}>)")
            continue
        filename = (node.findtext("filename") or "").strip() or None
        candidates, stem_only = _voc_candidates(rel, filename, (node.findtext("folder") or "").strip() or None, (node.findtext("path") or "").strip() or None)
        record = GtRecord(source=rel, candidates=candidates, stem_only=stem_only)
        try:
            record.size = (int(float(node.findtext("size/width") or 0)), int(float(node.findtext("size/height") or 0)))
        except ValueError:
            record.notes.append(f"bad <size> {node.findtext('size/width')!r}x{node.findtext('size/height')!r}; the image's stored size is used")
        for index, obj in enumerate(node.findall("object")):
            name = (obj.findtext("name") or "").strip()
            box = obj.find("bndbox")
            if not name or box is None:
                record.problems.append(f"object {index + 1}: missing <name> or <bndbox>")
                continue
            try:
                coords = tuple(float((box.findtext(k) or "").strip()) for k in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError:
                record.problems.append(f"object {index + 1} ({name}): bad <bndbox> values")
                continue
            record.boxes.append(GtBox(name, coords))  # type: ignore[arg-type]  # four values, one per tag read
        yield record


# -- YOLO -----------------------------------------------------------------------------------
def yolo_class_names(root: Path) -> list[str] | None:
    """Class names from ``data.yaml`` (``names`` list or ``{index: name}``) or a names file."""
    if root.is_file():
        root = root.parent
    for file_name in YOLO_NAME_FILES:
        found = sorted(root.rglob(file_name), key=lambda p: len(p.parts))
        if not found:
            continue
        path = found[0]
        try:
            if path.suffix in (".yaml", ".yml"):
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
                names = data.get("names") if isinstance(data, dict) else None
                if isinstance(names, dict):
                    return [str(names[k]) for k in sorted(names, key=int)]
                if isinstance(names, list):
                    return [str(n) for n in names]
                continue
            return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError):
            continue
    return None


def read_yolo(root: Path, names: list[str] | None) -> Iterator[GtRecord]:
    """Records of YOLO label files (``cls cx cy w h`` normalised; polygons reduced to their box).

    Label ``X/labels/a.txt`` names image ``X/images/a.<any extension>``.
    """
    if root.is_file():
        files, base = [root], root.parent
    else:
        files = sorted(p for p in root.rglob("*.txt") if p.is_file() and p.name not in YOLO_NAME_FILES)
        in_labels = [p for p in files if "labels" in p.relative_to(root).parts[:-1]]
        files, base = (in_labels or files), root
    for txt in files:
        rel = _posix_rel(txt, base)
        parts = list(PurePosixPath(rel).parts)
        stem = PurePosixPath(parts[-1]).stem
        dirs = parts[:-1]
        if "labels" in dirs:
            i = len(dirs) - 1 - dirs[::-1].index("labels")
            dirs = [*dirs[:i], "images", *dirs[i + 1:]]
        record = GtRecord(source=rel, candidates=["/".join([*dirs, stem]), stem], stem_only=True)
        try:
            lines = txt.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            record.fatal = f"not a readable text file: {exc}"
            yield record
            continue
        for number, line in enumerate(lines, start=1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                cls = int(float(tokens[0]))
                values = [float(t) for t in tokens[1:]]
            except ValueError:
                record.problems.append(f"line {number}: not numbers: {line.strip()[:60]!r}")
                continue
            if len(values) in (4, 5):
                coords = tuple(values[:4])
            elif len(values) >= 6 and len(values) % 2 == 0:
                xs, ys = values[0::2], values[1::2]
                coords = ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys))
            else:
                record.problems.append(f"line {number}: expected 'cls cx cy w h', got {len(tokens)} values")
                continue
            if cls < 0:
                record.problems.append(f"line {number}: negative class {cls}")
                continue
            name = names[cls] if names is not None and cls < len(names) else str(cls)
            if names is not None and cls >= len(names):
                record.notes.append(f"line {number}: class {cls} has no name in data.yaml; imported as category {name!r}")
            record.boxes.append(GtBox(name, coords, normalised=True))  # type: ignore[arg-type]  # four values: the line's length is checked above
        yield record
