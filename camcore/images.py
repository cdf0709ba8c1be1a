"""Image loading that survives real files.

``load_image`` always returns an 8-bit RGB ``PIL.Image`` with the EXIF orientation applied, or
raises :class:`ImageLoadError` with a human-readable reason. It never lets one bad file break a
batch: callers catch ``ImageLoadError`` per image.

Handled on purpose:

- the format is read from the content, not from the file name (a PNG saved as ``.jpg`` loads);
- EXIF orientation (tags 2..8) is applied, so width/height are those a viewer shows;
- modes ``RGBA/LA/PA/P`` (alpha composited onto white), ``L``, ``1``, ``CMYK``, ``YCbCr``, ``LAB``,
  ``HSV``, 16-bit greyscale (``I;16*``/``I``) and float (``F``) are converted to RGB, 16-bit values
  scaled to 8 bits rather than clipped;
- a truncated JPEG is decoded as far as the data goes (the rest is filled grey) and the returned
  image carries ``info["camlabel_truncated"] = True``; if nothing can be decoded it is rejected;
- images whose header claims more than ``max_pixels`` pixels are rejected before any pixel is
  decoded (decompression-bomb guard), and so are images whose decode would need more than
  ``max_decode_bytes`` of memory: the estimate counts Pillow's bytes per pixel of the file's mode
  plus the copies the conversion to RGB makes (a 16-bit greyscale PNG costs ~14 bytes a pixel);
- an empty (0-byte) file is rejected as such, not as an unknown format;
- ``min_size``: a caller that only needs ``min_size`` pixels per side (the model's input) gets a
  large JPEG decoded at a reduced DCT scale (1/2, 1/4 or 1/8, both sides kept >= ``min_size``):
  several times faster on phone photos. :func:`original_size` still gives the full size, which
  boxes are expressed in.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_DECODE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "decode_cost_bytes",
    "ImageLoadError",
    "ImageSource",
    "image_size_after_exif",
    "load_image",
    "load_images",
    "original_size",
]

ImageSource = Union[str, "os.PathLike[str]", bytes, BinaryIO]

#: Default decompression-bomb limit: 100 megapixels (a 10000 x 10000 photo).
DEFAULT_MAX_PIXELS = 100_000_000
#: Default memory budget of one decode: 1 GiB (a 100-megapixel RGB photo needs ~0.4 GiB).
DEFAULT_MAX_DECODE_BYTES = 1 << 30

#: Bytes per pixel Pillow holds for a decoded image of each mode (its in-memory layout: RGB is
#: stored in 4 bytes); modes not listed are counted as 4.
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

_EXIF_ORIENTATION = 0x0112
_TRANSPOSES = frozenset(range(2, 9))  # EXIF orientations that move pixels
_ORIGINAL_SIZE = "camlabel_original_size"
_TRUNCATION_LOCK = threading.Lock()


class ImageLoadError(Exception):
    """An image could not be loaded; ``reason`` says why, ``source`` names the file if known."""

    def __init__(self, reason: str, source: str | None = None) -> None:
        self.reason = reason
        self.source = source
        super().__init__(f"{source}: {reason}" if source else reason)

    def __reduce__(self) -> tuple[type[ImageLoadError], tuple[str, str | None]]:
        # pickled as (reason, source): the error crosses from loader processes unchanged
        return (type(self), (self.reason, self.source))


def _describe(source: ImageSource) -> str | None:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, str) else None


def _open(source: ImageSource) -> Image.Image:
    """Open lazily (header only). Raises ImageLoadError for unreadable/unknown content."""
    label = _describe(source)
    fp: str | BinaryIO
    if isinstance(source, bytes):
        if not source:
            raise ImageLoadError("empty file (0 bytes)", label)
        fp = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageLoadError("file does not exist", label)
        if path.stat().st_size == 0:
            raise ImageLoadError("empty file (0 bytes)", label)
        fp = str(path)
    else:
        fp = source
    try:
        with warnings.catch_warnings():
            # The explicit pixel limit below applies instead; Pillow's warning would be an error
            # under strict warning filters and its hard error has a less useful message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"image is too large (decompression bomb guard): {exc}", label) from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError("not a recognised image format", label) from exc
    except OSError as exc:
        raise ImageLoadError(f"cannot read image: {exc}", label) from exc


def decode_cost_bytes(mode: str, size: tuple[int, int], *, transposed: bool = False) -> int:
    """Estimated peak bytes of decoding an image of ``mode`` and ``size`` (width, height) in pixels
    and converting it to RGB with :func:`load_image` (plus one more copy when an EXIF rotation
    moves the pixels)."""
    w, h = size
    raw = _MODE_BYTES.get(mode, 4)
    # the temporary copies _to_rgb makes on top of the decoded image (the RGB result included)
    if mode == "RGB":
        extra = 0
    elif mode in _ALPHA_MODES:  # RGBA copy, white background, composite, RGB
        extra = 16
    elif mode.startswith("I;16"):  # numpy copy, 4-byte working array, uint8, grey, RGB
        extra = raw + 4 + 1 + 1 + 4
    elif mode in ("I", "F"):  # numpy copy, two float64 arrays, uint8, grey, RGB
        extra = raw + 16 + 1 + 1 + 4
    else:  # one convert("RGB")
        extra = 4
    return int(w) * int(h) * (raw + extra + (raw if transposed else 0))


def _check_budget(img: Image.Image, max_decode_bytes: int | None, label: str | None) -> None:
    if max_decode_bytes is None:
        return
    if img.format in ("JPEG", "MPO"):  # EXIF is in the header; other formats may keep it after the pixels
        try:
            transposed = img.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSES
        except Exception:  # noqa: BLE001 - unreadable EXIF: no rotation
            transposed = False
    else:  # reading EXIF could decode the pixels first (PNG): count the rotation's copy
        transposed = True
    cost = decode_cost_bytes(img.mode, img.size, transposed=transposed)
    if cost > max_decode_bytes:
        w, h = img.size
        raise ImageLoadError(
            f"image is {w}x{h} in mode {img.mode}: decoding it needs about {cost / (1 << 20):.0f} MiB, more than the "
            f"{max_decode_bytes / (1 << 20):.0f} MiB per-image memory budget (decompression bomb guard)",
            label,
        )


def _check_pixels(img: Image.Image, max_pixels: int | None, label: str | None) -> None:
    if max_pixels is None:
        return
    w, h = img.size
    if w * h > max_pixels:
        raise ImageLoadError(
            f"image is {w}x{h} = {w * h} pixels, more than max_pixels={max_pixels} "
            "(decompression bomb guard)",
            label,
        )
    if w <= 0 or h <= 0:
        raise ImageLoadError(f"image has an empty size {w}x{h}", label)


def _decode(img: Image.Image, source: ImageSource, label: str | None) -> Image.Image:
    """Decode pixels; fall back to tolerant decoding for truncated files."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
        return img
    except OSError as first:
        img.close()
        if isinstance(source, (str, os.PathLike, bytes)):
            retry = _open(source)
        else:
            try:
                source.seek(0)
            except (AttributeError, OSError):
                raise ImageLoadError(f"cannot decode image: {first}", label) from first
            retry = _open(source)
        # Pillow only offers a process-wide switch; hold a lock while it is on.
        with _TRUNCATION_LOCK:
            previous = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = True
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    retry.load()
            except (OSError, SyntaxError, ValueError) as second:
                retry.close()
                raise ImageLoadError(
                    f"truncated or corrupt image that cannot be decoded: {second}", label
                ) from second
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = previous
        retry.info["camlabel_truncated"] = True
        return retry


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha composited over white, 16-bit scaled)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16"):  # integer rounding of v / 257 in a 4-byte working array
        scaled = (np.asarray(img).astype(np.uint32) * 2 + 257) // 514
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    if mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "I":
            peak = float(arr.max()) if arr.size else 0.0
            arr = arr / 257.0 if peak > 255 else arr
        else:  # "F": floats, scale to the observed range if it is not already 0..255
            lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
            if lo < 0 or hi > 255:
                arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
            elif hi <= 1.0:
                arr = arr * 255.0
        grey = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        return grey.convert("RGB")
    return img.convert("RGB")


def original_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) in pixels of the image file as displayed (EXIF applied), also for an image
    :func:`load_image` decoded at a reduced scale (``min_size``)."""
    size = img.info.get(_ORIGINAL_SIZE)
    return (int(size[0]), int(size[1])) if size else (int(img.width), int(img.height))


def load_image(source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_size: int | None = None,
               max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES) -> Image.Image:
    """Load ``source`` (path, bytes or binary file object) as an RGB image with EXIF applied.

    Args:
        source: a file path, the file's bytes, or a readable binary file object.
        max_pixels: reject images whose header claims more than this many pixels (width x height)
            before decoding them; ``None`` disables the guard.
        min_size: if given, a JPEG at least twice this size on both sides may be decoded at a
            reduced scale (its sides stay ``>= min_size``); other formats load at full size.
        max_decode_bytes: reject images whose decode and RGB conversion would need more than this
            many bytes (:func:`decode_cost_bytes`, counted at the reduced scale ``min_size``
            allows) before decoding them; ``None`` disables the budget.

    Returns:
        A fully loaded ``PIL.Image`` in mode ``"RGB"``; ``size`` is (width, height) in pixels after
        the EXIF rotation (reduced if ``min_size`` allowed it: :func:`original_size` gives the
        file's). ``info["camlabel_truncated"]`` is ``True`` if the file was truncated and only
        partly decoded.

    Raises:
        ImageLoadError: missing or empty file, unknown format, too many pixels, over the memory
            budget, or undecodable content.
    """
    label = _describe(source)
    opened = _open(source)
    try:
        _check_pixels(opened, max_pixels, label)
    except ImageLoadError:
        opened.close()
        raise
    full_size = opened.size
    if min_size is not None:
        if min_size < 1:
            raise ValueError(f"min_size must be >= 1, got {min_size}")
        if opened.format == "JPEG" and min(full_size) >= 2 * min_size:
            opened.draft("RGB", (min_size, min_size))  # the decoder's DCT scaling; sides stay >= min_size
    try:
        _check_budget(opened, max_decode_bytes, label)
    except ImageLoadError:
        opened.close()
        raise
    opened = _decode(opened, source, label)  # (a truncated-file retry decodes at full size)
    truncated = bool(opened.info.get("camlabel_truncated", False))
    reduced_to = opened.size
    img, swapped = opened, False
    try:
        orientation = opened.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in _TRANSPOSES:  # (orientation 1 / none: no copy of the pixels)
            img = ImageOps.exif_transpose(opened)
            swapped = orientation in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - a broken EXIF block is common; keep the pixels unrotated
        img, swapped = opened, False
    try:
        rgb = _to_rgb(img)
    except (OSError, ValueError) as exc:
        opened.close()
        raise ImageLoadError(f"cannot convert image mode {img.mode!r} to RGB: {exc}", label) from exc
    if rgb is opened:
        # Same object as the opened file: detach it from the file (multi-frame formats keep it open).
        if getattr(opened, "n_frames", 1) > 1:
            rgb = opened.copy()
            opened.close()
    else:
        opened.close()
    if truncated:
        rgb.info["camlabel_truncated"] = True
    if reduced_to != full_size:  # decoded at a reduced scale: remember the displayed full size
        rgb.info[_ORIGINAL_SIZE] = (full_size[1], full_size[0]) if swapped else full_size
    return rgb


def load_images(
    sources: Sequence[ImageSource | Image.Image],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: int | None = None,
    executor: Executor | None = None,
    max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES,
) -> list[Image.Image | ImageLoadError]:
    """:func:`load_image` for each source, in order; a source that cannot be loaded gives its
    :class:`ImageLoadError` in its place (one bad file never breaks the batch). A source that is
    already a ``PIL.Image`` is passed through as it is.

    With an ``executor`` (threads) the files are decoded in parallel: Pillow's decoders release
    the GIL, so two threads decode a batch of photos about 1.8x faster on two cores. Other
    exceptions (a bug, not a bad file) propagate.
    """

    def one(source: ImageSource | Image.Image) -> Image.Image | ImageLoadError:
        if isinstance(source, Image.Image):
            return source
        try:
            return load_image(source, max_pixels=max_pixels, min_size=min_size, max_decode_bytes=max_decode_bytes)
        except ImageLoadError as exc:
            return exc

    if executor is None or len(sources) < 2:
        return [one(s) for s in sources]
    return list(executor.map(one, sources))


def image_size_after_exif(source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) in pixels as displayed (EXIF orientation applied), read from the header only.

    Raises:
        ImageLoadError: as :func:`load_image`, for what can be told without decoding pixels.
    """
    label = _describe(source)
    img = _open(source)
    try:
        _check_pixels(img, max_pixels, label)
        w, h = img.size
        try:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        except Exception:  # noqa: BLE001 - unreadable EXIF: treat as not rotated
            orientation = 1
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        return int(w), int(h)
    finally:
        img.close()
