"""Packshots as users bring them: transparent PNGs, grey and 16-bit images, hostile files."""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from pipeline.core.packshot import cut_out
from pipeline.detect.recognizer import decode_packshot
from pipeline.errors import CatalogError
from tests.unit import icc_profiles


def product_on(background: tuple[int, int, int, int]) -> bytes:
    """A red pack of 60 x 120 pixels in a 200 x 200 PNG, on ``background`` (RGBA)."""
    im = Image.new("RGBA", (200, 200), background)
    im.paste((200, 30, 30, 255), (70, 40, 130, 160))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_a_transparent_backdrop_is_cut_out_as_a_white_one() -> None:
    # A transparent pixel's colour is whatever the editor left there, black most often
    clear = decode_packshot(product_on((0, 0, 0, 0)), "clear.png")
    white = decode_packshot(product_on((255, 255, 255, 255)), "white.png")
    assert np.array_equal(clear, white)
    cut = cut_out(clear)
    assert cut is not None and cut.image.shape[:2] == (120, 60)


def _png(mode: str) -> bytes:
    im = Image.open(io.BytesIO(product_on((255, 255, 255, 255)))).convert("RGB")
    if mode == "16-bit":
        ok, enc = cv2.imencode(".png", np.asarray(im)[:, :, ::-1].astype(np.uint16) * 257)
        assert ok
        return bytes(enc.tobytes())
    buf = io.BytesIO()
    im.convert(mode).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "16-bit", "RGB", "P"])
def test_grey_16_bit_and_palette_packshots_are_colour_8_bit(mode: str) -> None:
    out = decode_packshot(_png(mode), f"{mode}.png")
    assert out.shape == (200, 200, 3) and out.dtype == np.uint8
    assert out[0, 0].min() >= 250  # the white backdrop stays white
    assert out[100, 100, 2] > 150 or mode == "L"  # and the red pack red


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_packshot_in_display_p3_is_read_in_srgb_as_the_photos_are(fmt: str) -> None:
    # A packshot taken with an iPhone: the pack's red in P3, the backdrop white
    profile = icc_profiles.display_profile("Display P3", icc_profiles.DISPLAY_P3_PRIMARIES)
    buf = io.BytesIO()
    Image.open(io.BytesIO(product_on((255, 255, 255, 255)))).convert("RGB").save(
        buf, fmt, icc_profile=profile, **({"quality": 100, "subsampling": 0}
                                          if fmt == "JPEG" else {}))
    out = decode_packshot(buf.getvalue(), f"p3.{fmt.lower()}")
    red = icc_profiles.as_srgb(np.array([[200, 30, 30]], np.uint8),
                               icc_profiles.DISPLAY_P3_PRIMARIES)[0]
    assert np.abs(out[100, 100, ::-1] - red).max() <= 4  # (200, 30, 30) read as sRGB before
    assert out[5, 5].min() >= 253


def test_a_packshot_claiming_a_bomb_of_pixels_is_refused_unread() -> None:
    _, enc = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    data = bytearray(enc.tobytes())
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", 30_000, 30_000)
    t0 = time.perf_counter()
    with pytest.raises(CatalogError, match=r"bomb\.png: not a usable"):
        decode_packshot(bytes(data), "bomb.png")
    assert time.perf_counter() - t0 < 1.0  # refused from its header


@pytest.mark.parametrize("data", [b"", b"GIF89a\x01\x00", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_files_that_are_no_packshot_are_a_catalog_error(data: bytes) -> None:
    with pytest.raises(CatalogError):
        decode_packshot(data, "x.png")


def test_a_phone_packshot_is_read_upright() -> None:
    # Shot in portrait: stored landscape, with EXIF orientation 6 (rotate 90 degrees)
    im = Image.new("RGB", (200, 100), (255, 255, 255))
    im.paste((200, 30, 30), (0, 0, 50, 100))  # red on the stored left = the upright top
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    out = decode_packshot(buf.getvalue(), "phone.jpg")
    assert out.shape[:2] == (200, 100)
    assert out[10, 50, 2] > 150 and out[190, 50, 2] > 200 and out[190, 50, 1] > 200


def _backdrop() -> npt.NDArray[np.uint8]:
    return np.full((200, 200, 3), 255, np.uint8)


def white_carton() -> npt.NDArray[np.uint8]:
    """A white carton (60 x 120) whose shaded sides and label are all that differ from the
    white backdrop: top and bottom edges are as white as the studio."""
    img = _backdrop()
    img[40:160, 70:130] = 250
    img[40:160, 70:76] = img[40:160, 124:130] = 215  # shaded sides
    img[100:120, 70:130] = (30, 120, 230)  # an orange label band
    return img


def bottle() -> npt.NDArray[np.uint8]:
    """A bottle (50 x 140) whose neck is a fifth of its width."""
    img = _backdrop()
    img[30:70, 120:130] = (40, 40, 200)  # the neck
    img[70:170, 100:150] = (40, 40, 200)
    return img


def on_glossy_table() -> npt.NDArray[np.uint8]:
    """A pack (60 x 100) with a faint narrow reflection under it."""
    img = _backdrop()
    img[40:140, 70:130] = (200, 60, 60)
    img[140:175, 92:108] = (225, 200, 200)
    return img


@pytest.mark.parametrize(("make", "size"), [
    (white_carton, (120, 60)),
    (bottle, (140, 50)),
    (on_glossy_table, (100, 60)),
])
def test_a_packshot_is_cut_to_the_whole_product(
        make: Callable[[], npt.NDArray[np.uint8]], size: tuple[int, int]) -> None:
    # The aspect ratio read from the cut-out names products apart on the shelf: a carton
    # cut to its label band, or a bottle without its neck, would be a wide pack.
    cut = cut_out(make())
    assert cut is not None
    assert cut.mask.shape == size
    assert cut.aspect == pytest.approx(size[1] / size[0])


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_a_web_shop_packshot_is_read_upright_on_white(fmt: str) -> None:
    # A transparent WebP (or PNG) packshot, stored sideways with EXIF orientation 6
    im = Image.open(io.BytesIO(product_on((0, 0, 0, 0)))).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, fmt, exif=exif.tobytes(), **({"lossless": True} if fmt == "WEBP" else {}))
    out = decode_packshot(buf.getvalue(), f"shop.{fmt.lower()}")
    # Then it is the same packshot as the upright one on white
    assert np.array_equal(out, decode_packshot(product_on((255, 255, 255, 255)), "w.png"))
