"""load_image on the files real collections contain, each made here."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camcore.images import ImageLoadError, image_size_after_exif, load_image


def _half_red(w: int = 40, h: int = 20) -> Image.Image:
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = _half_red()  # 40 x 20: left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display = rotate 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    img.save(path, quality=95, exif=exif)
    assert image_size_after_exif(path) == (20, 40)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (20, 40)
    arr = np.asarray(out).astype(int)
    # after a clockwise quarter turn the left (red) half is on top
    assert arr[5, 10, 0] > 200 and arr[5, 10, 2] < 60
    assert arr[35, 10, 2] > 200 and arr[35, 10, 0] < 60


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    arr = np.zeros((10, 10, 4), dtype=np.uint8)
    arr[:, :5] = (255, 0, 0, 255)  # opaque red
    arr[:, 5:] = (0, 0, 0, 0)  # fully transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(arr).save(path)
    out = np.asarray(load_image(path))
    assert out.shape == (10, 10, 3)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 9]) == (255, 255, 255)


def test_palette_and_greyscale_become_rgb(tmp_path: Path) -> None:
    p_path = tmp_path / "palette.png"
    _half_red().convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(p_path)
    out = np.asarray(load_image(p_path)).astype(int)
    assert out.shape == (20, 40, 3)
    assert out[0, 0, 0] > 200 and out[0, 39, 2] > 200

    l_path = tmp_path / "grey.png"
    Image.fromarray(np.full((8, 8), 77, dtype=np.uint8)).save(l_path)
    grey = np.asarray(load_image(l_path))
    assert grey.shape == (8, 8, 3) and (grey == 77).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # CMYK red
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    out = np.asarray(load_image(path)).astype(int)
    assert out.shape == (16, 16, 3)
    assert out[8, 8, 0] > 200 and out[8, 8, 1] < 60 and out[8, 8, 2] < 60


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16).repeat(4, axis=0)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    out = np.asarray(load_image(path))
    assert out.shape == (4, 3, 3)
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_png_saved_as_jpg_is_read_by_content(tmp_path: Path) -> None:
    path = tmp_path / "actually_png.jpg"
    _half_red().save(path, format="PNG")
    out = np.asarray(load_image(path))
    assert out.shape == (20, 40, 3) and tuple(out[0, 0]) == (255, 0, 0)  # lossless: really the PNG


def _noise_jpeg(size: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_truncated_jpeg_loads_partially_and_is_flagged(tmp_path: Path) -> None:
    data = _noise_jpeg()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(OSError), Image.open(path) as plain:  # plain Pillow refuses it
        plain.load()
    out = load_image(path)
    assert out.size == (64, 64) and out.mode == "RGB"
    assert out.info.get("camlabel_truncated") is True
    assert load_image(data).info.get("camlabel_truncated") is None  # the intact bytes are not flagged


def test_jpeg_cut_inside_its_header_is_rejected_clearly(tmp_path: Path) -> None:
    path = tmp_path / "stub.jpg"
    path.write_bytes(_noise_jpeg()[:30])
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_real_truncated_photo_from_the_shared_dataset(shared_dataset: Path) -> None:
    img = load_image(shared_dataset / "kangaroo" / "images" / "00090.jpg")
    assert img.mode == "RGB" and img.info.get("camlabel_truncated") is True


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_rejected_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(40_000, 40_000))  # claims 1.6 gigapixels in ~100 bytes
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        image_size_after_exif(path)
    with pytest.raises(ImageLoadError, match="decompression bomb"):  # Pillow's own limit still applies
        load_image(path, max_pixels=None)
    small = tmp_path / "small.png"
    _half_red().save(small)
    with pytest.raises(ImageLoadError, match="max_pixels=100"):
        load_image(small, max_pixels=100)


def test_not_an_image_and_missing_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(ImageLoadError, match="not a recognised image"):
        load_image(text)
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_image(tmp_path / "missing.jpg")


def test_a_bad_file_does_not_break_a_batch(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    _half_red().save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    loaded, errors = [], []
    for p in [good, bad, good]:
        try:
            loaded.append(load_image(p))
        except ImageLoadError as exc:
            errors.append(exc)
    assert len(loaded) == 2 and len(errors) == 1 and errors[0].source == str(bad)


def test_file_objects_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    _half_red().save(path)
    with open(path, "rb") as fh:
        assert load_image(fh).size == (40, 20)
    assert load_image(path.read_bytes()).size == (40, 20)


@pytest.mark.parametrize("orientation", [1, 6])
def test_large_jpeg_decoded_at_reduced_scale_keeps_its_original_size(tmp_path: Path, orientation: int) -> None:
    """``min_size``: a 2400x1800 JPEG needed at 448 px decodes at 1/2 or 1/4 scale (sides >= 448),
    and ``original_size`` still reports the displayed full size (EXIF rotation included)."""
    from camcore.images import original_size

    photo = Image.new("RGB", (2400, 1800), (30, 90, 160))
    photo.paste((240, 200, 20), (1200, 300, 2000, 1500))  # a yellow block right of centre
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "big.jpg"
    photo.save(path, format="JPEG", quality=92, exif=exif.tobytes())
    displayed = (2400, 1800) if orientation == 1 else (1800, 2400)

    full = load_image(path)
    reduced = load_image(path, min_size=448)
    assert full.size == displayed and original_size(full) == displayed
    assert original_size(reduced) == displayed
    assert reduced.size in ((displayed[0] // 2, displayed[1] // 2), (displayed[0] // 4, displayed[1] // 4))
    assert min(reduced.size) >= 448
    # same picture: the reduced decode matches the full one downscaled
    small_full = np.asarray(full.resize(reduced.size, Image.Resampling.BOX), dtype=np.int16)
    assert np.abs(small_full - np.asarray(reduced, dtype=np.int16)).mean() < 3.0
    # small images and other formats are never reduced
    assert load_image(path, min_size=1000).size == displayed
    png = tmp_path / "big.png"
    photo.save(png)
    assert load_image(png, min_size=448).size == (2400, 1800) and "camlabel_original_size" not in load_image(png, min_size=448).info
