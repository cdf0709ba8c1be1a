"""Image files for exports whose pixels are in the orientation the boxes use (and JPEG where a
format requires it).

Boxes are pixels of the displayed image (EXIF orientation applied). A file copied as is keeps
its EXIF orientation tag, and readers that ignore EXIF (most training loaders, VOC tools)
would see the stored, unrotated pixels and misplace every box. Files with an orientation other
than "normal" are therefore re-encoded upright, without the tag; all others are copied as is.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

ORIENTATION_TAG = 0x0112
_SAVE_FORMATS = {"JPEG": {"quality": 95}, "PNG": {}, "WEBP": {"quality": 95}, "TIFF": {}}


def exif_orientation(path: Path) -> int:
    """The file's EXIF orientation (1..8; 1 = as stored), 1 when absent or unreadable.

    Reads the header only (Pillow opens lazily)."""
    try:
        with Image.open(path) as img:
            value = img.getexif().get(ORIENTATION_TAG, 1)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def upright_bytes(path: Path) -> bytes | None:
    """The file re-encoded with its EXIF orientation applied and the tag removed, in the same
    format (JPEG/WebP at quality 95, ICC profile kept); ``None`` when the file needs no change
    (orientation 1 or none, or a format other than JPEG/PNG/WebP/TIFF) and can be copied as is."""
    if exif_orientation(path) == 1:
        return None
    with Image.open(path) as img:
        fmt = img.format or ""
        if fmt not in _SAVE_FORMATS:  # formats that carry no EXIF orientation in practice
            return None
        icc = img.info.get("icc_profile")
        upright = ImageOps.exif_transpose(img)
    exif = upright.getexif()
    exif.pop(ORIENTATION_TAG, None)
    options: dict[str, object] = dict(_SAVE_FORMATS[fmt])
    if fmt == "JPEG" and upright.mode not in ("RGB", "L", "CMYK"):
        upright = upright.convert("RGB")
    if icc:
        options["icc_profile"] = icc
    buffer = io.BytesIO()
    upright.save(buffer, format=fmt, exif=exif.tobytes(), **options)
    return buffer.getvalue()


def jpeg_bytes(path: Path) -> bytes | None:
    """The file as an upright JPEG without an orientation tag (quality 95; transparency flattened
    on white), for layouts whose readers expect ``.jpg`` files (Pascal VOC); ``None`` when the
    file is a JPEG already that needs no rotation (copy it as is)."""
    with Image.open(path) as img:
        is_jpeg = img.format == "JPEG"
    if is_jpeg:
        return upright_bytes(path)
    with Image.open(path) as img:
        icc = img.info.get("icc_profile")
        upright = ImageOps.exif_transpose(img)
    if upright.mode in ("RGBA", "LA") or (upright.mode == "P" and "transparency" in upright.info):
        rgba = upright.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        upright = flat
    elif upright.mode not in ("RGB", "L"):
        upright = upright.convert("RGB")
    exif = upright.getexif()
    exif.pop(ORIENTATION_TAG, None)
    options: dict[str, object] = {"quality": 95}
    if icc:
        options["icc_profile"] = icc
    buffer = io.BytesIO()
    upright.save(buffer, format="JPEG", exif=exif.tobytes(), **options)
    return buffer.getvalue()
