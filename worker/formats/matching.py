"""Match paths named by ground-truth files to a collection's images.

A path names an image when its file name (or stem, for YOLO) equals the image's; among several
such images the one sharing the longest run of trailing path components wins, so
``/Users/x/raccoon/images/r-1.jpg`` finds ``raccoon/images/r-1.jpg`` and a bare ``r-1.jpg``
finds it too when no other image has that name. Ties are reported as ambiguous.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.formats.sink import stem_of
from worker.store.blobs import file_sha256
from worker.store.models import Image as ImageRow
from worker.store.models import ImageStatus


@dataclass(frozen=True)
class ImageRef:
    id: int
    rel_path: str
    width: int | None
    height: int | None
    ok: bool
    failure_reason: str | None


def _parts(path: str) -> list[str]:
    return [p for p in path.replace("\\", "/").split("/") if p not in ("", ".", "..")]


class ImageMatcher:
    """Index of one collection's images by file name and stem (built once per import)."""

    def __init__(self, session: Session, collection_id: int) -> None:
        self.by_name: dict[str, list[ImageRef]] = defaultdict(list)
        self.by_stem: dict[str, list[ImageRef]] = defaultdict(list)
        self.count = 0
        self.by_sha256: dict[str, ImageRef] = {}
        stmt = select(
            ImageRow.id, ImageRow.rel_path, ImageRow.width, ImageRow.height, ImageRow.status, ImageRow.failure_reason, ImageRow.sha256
        ).where(ImageRow.collection_id == collection_id)
        for image_id, rel_path, width, height, status, reason, sha256 in session.execute(stmt):
            ref = ImageRef(image_id, rel_path, width, height, status == ImageStatus.ok, reason)
            self.by_sha256[sha256] = ref
            name = _parts(rel_path)[-1] if _parts(rel_path) else rel_path
            self.by_name[name].append(ref)
            self.by_stem[stem_of(name)].append(ref)
            self.count += 1

    def match_content(self, root: Path, candidates: list[str]) -> ImageRef | None:
        """The image whose bytes equal a candidate file found under ``root`` (a duplicate file of
        an imported image is stored once, under its first path). Paths never leave ``root``."""
        base = root.resolve()
        for candidate in candidates:
            parts = _parts(candidate)
            if not parts:
                continue
            path = base.joinpath(*parts)
            if path.is_file() and path.resolve().is_relative_to(base):
                found = self.by_sha256.get(file_sha256(path))
                if found is not None:
                    return found
        return None

    def _best(self, parts: list[str], stem_only: bool) -> list[ImageRef]:
        last = parts[-1]
        options = self.by_stem.get(last, []) if stem_only else self.by_name.get(last, [])
        if len(options) <= 1:
            return options
        scored = []
        for ref in options:
            ref_parts = _parts(ref.rel_path)
            n = 1
            while n < len(parts) and n < len(ref_parts) and parts[-1 - n] == ref_parts[-1 - n]:
                n += 1
            scored.append((n, ref))
        top = max(n for n, _ in scored)
        return [ref for n, ref in scored if n == top]

    def match(self, candidates: list[str], *, stem_only: bool = False) -> tuple[ImageRef | None, str]:
        """The image named by the first candidate that names exactly one; else ``(None, reason)``.

        Flat export names (``a__images__b.jpg``) are also tried as paths (``a/images/b.jpg``).
        """
        ambiguous: list[str] = []
        tried: list[str] = []
        for candidate in candidates:
            variants = []
            if "__" in candidate:
                variants.append(candidate.replace("__", "/"))
            variants.append(candidate)
            for variant in variants:
                parts = _parts(variant)
                if not parts:
                    continue
                if stem_only and PurePosixPath(parts[-1]).suffix and not self.by_stem.get(parts[-1]):
                    parts[-1] = stem_of(parts[-1])
                found = self._best(parts, stem_only)
                if not found and not stem_only and not PurePosixPath(parts[-1]).suffix:
                    found = self._best(parts, True)  # a name given without its extension
                if len(found) == 1:
                    return found[0], ""
                if len(found) > 1:
                    shown = ", ".join(sorted(r.rel_path for r in found)[:5])
                    ambiguous.append(f"{variant!r} matches {len(found)} images ({shown})")
            if candidate not in tried:
                tried.append(candidate)
        if ambiguous:
            return None, "ambiguous file name: " + "; ".join(ambiguous[:2])
        return None, "no image in the collection matches " + " or ".join(repr(c) for c in tried[:3])
