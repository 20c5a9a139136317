"""Hostile and unusual photos: each is decided from its header with a clear reason, cheaply,
or read correctly when it is a photo after all."""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime

import cv2
import numpy as np
import pillow_heif
import pytest
import simplejpeg
from PIL import Image

from pipeline.errors import CorruptImageError
from pipeline.image import MAX_JPEG_SCANS, decode_upright, inspect_image, parse_exif_time
from tests.unit import icc_profiles

LIMITS = {"max_pixels": 50_000_000, "min_side": 320, "max_side": 12_000}
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _pixels(w: int = 640, h: int = 480) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), np.uint8)


def jpeg(w: int = 640, h: int = 480, **exif: object) -> bytes:
    im = Image.fromarray(_pixels(w, h))
    buf = io.BytesIO()
    e = Image.Exif()
    for tag, value in exif.items():
        if tag == "orientation":
            e[0x0112] = value
        elif tag == "taken":
            e.get_ifd(0x8769)[0x9003] = value
    im.save(buf, "JPEG", quality=85, exif=e.tobytes() if exif else b"")
    return buf.getvalue()


def png(mode: str = "RGB", **kw: object) -> bytes:
    arr = _pixels()
    im = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def png16() -> bytes:
    ok, buf = cv2.imencode(".png", (_pixels().astype(np.uint16) * 257))
    assert ok
    return bytes(buf.tobytes())


def cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pixels()).convert("CMYK").save(buf, "JPEG")
    return buf.getvalue()


def heic(w: int = 480, h: int = 360, image: np.ndarray | None = None, **exif: object) -> bytes:
    """An iPhone-style HEIC: HEVC pixels, EXIF with Orientation (written by pillow-heif as
    the container's own transform, as iOS does) and DateTimeOriginal."""
    import pillow_heif

    e = Image.Exif()
    if "orientation" in exif:
        e[0x0112] = exif["orientation"]
    if "taken" in exif:
        e[0x8769] = {0x9003: exif["taken"]}
    buf = io.BytesIO()
    pixels = _pixels(w, h) if image is None else image
    pillow_heif.from_pillow(Image.fromarray(pixels)).save(buf, quality=90, exif=e.tobytes())
    return buf.getvalue()


def jpeg_claiming(w: int, h: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims ``w`` x ``h``."""
    data = bytearray(jpeg())
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def png_claiming(w: int, h: int) -> bytes:
    """A small PNG whose IHDR claims ``w`` x ``h`` (CRC fixed, as a crafted bomb would)."""
    data = bytearray(png())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", w, h)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17]))
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def webp(mode: str = "RGB", **kw: object) -> bytes:
    """A still 640 x 480 WebP (lossy unless ``lossless=True``), with EXIF when ``exif``
    bytes are given."""
    buf = io.BytesIO()
    Image.fromarray(_pixels()).convert(mode).save(buf, "WEBP", quality=80, **kw)
    return buf.getvalue()


def webp_claiming(w: int, h: int) -> bytes:
    """A small extended WebP whose canvas (VP8X) claims ``w`` x ``h``."""
    e = Image.Exif()
    e[0x0112] = 1
    data = bytearray(webp(exif=e.tobytes()))
    i = data.index(b"VP8X") + 8 + 4  # past the chunk header, the flags and reserved bytes
    data[i:i + 6] = (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return bytes(data)


def animated_webp() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pixels()).save(buf, "WEBP", save_all=True,
                                    append_images=[Image.fromarray(_pixels()[::-1])])
    return buf.getvalue()


def animated_png() -> bytes:
    frames = [Image.fromarray(_pixels()), Image.fromarray(_pixels()[::-1])]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def broken_exif() -> bytes:
    data = jpeg(orientation=6)
    i = data.index(b"Exif\x00\x00")
    return data[:i + 6] + b"\xde\xad\xbe\xef" * 4 + data[i + 22:]


def progressive_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pixels()).save(buf, "JPEG", quality=85, progressive=True)
    return buf.getvalue()


def scan_bomb(extra: int = 300) -> bytes:
    """A progressive JPEG with its last scan repeated: every header within bounds, a few KB
    more, and each copy decoded in full."""
    data = progressive_jpeg()
    end = data.rindex(b"\xff\xd9")
    last = data[data.rindex(b"\xff\xda"):end]
    return data[:end] + last * extra + data[end:]


def hidden_scan_bomb() -> bytes:
    """:func:`scan_bomb` with a comment holding the bytes of an end of image (FF D9) after
    its second scan: counted up to the first FF D9, it would have two scans."""
    data = scan_bomb()
    second = data.index(b"\xff\xda", data.index(b"\xff\xda") + 2)
    return data[:second] + b"\xff\xfe\x00\x04\xff\xd9" + data[second:]


def with_comment(comment: bytes) -> bytes:
    """A JPEG with a comment segment right after its start."""
    data = jpeg()
    return data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]


def multi_picture_jpeg() -> bytes:
    """A camera JPEG that carries a second picture (MPF): Pillow opens it as an MPO."""
    buf = io.BytesIO()
    first, second = Image.fromarray(_pixels()), Image.fromarray(_pixels(320, 240))
    first.save(buf, "MPO", save_all=True, append_images=[second])
    return buf.getvalue()


REFUSED: dict[str, tuple[Callable[[], bytes], str]] = {
    "zero-bytes": (lambda: b"", "empty file"),
    "truncated-jpeg": (lambda: jpeg()[:len(jpeg()) // 2], "truncated JPEG"),
    "truncated-png": (lambda: png()[:len(png()) // 2], "truncated PNG"),
    "garbage-after-header": (lambda: jpeg()[:20] + b"\x00" * 5000 + b"\xff\xd9",
                             "not a JPEG marker at byte 20"),
    "zero-padded-segments": (lambda: (lambda d: d[:d.index(b"\xff\xdb")] + b"\x00" * 8 + d[
        d.index(b"\xff\xdb"):])(jpeg()), "not a JPEG marker"),
    "empty-comment-flood": (lambda: (lambda d: d[:2] + b"\xff\xfe\x00\x02" * 500_000 + d[2:])(
        jpeg()), "more than 1000 segments"),
    "fill-byte-flood": (lambda: (lambda d: d[:2] + b"\xff" * 2_000_000 + d[2:])(jpeg()),
                        "more than 1000 segments"),
    "end-marker-only": (lambda: jpeg()[:2] + b"\xff\xd9", "no scan"),
    "jpeg-pixel-bomb": (lambda: jpeg_claiming(60_000, 60_000), "pixel bomb|exceeds"),
    "png-pixel-bomb": (lambda: png_claiming(12_000, 12_000), "pixel bomb|exceeds"),
    "too-wide": (lambda: jpeg_claiming(13_000, 400), "outside 320..12000"),
    "too-small": (lambda: jpeg(200, 150), "outside 320..12000"),
    "pdf-named-jpg": (lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
    "html-named-jpg": (lambda: b"\n  <!DOCTYPE html><html><body>hi</body></html>", "HTML"),
    "gif-named-jpg": (lambda: b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "GIF"),
    "webp-header-only": (lambda: b"RIFF\x24\x00\x00\x00WEBPVP8 ", "truncated WebP"),
    "truncated-webp": (lambda: webp()[:len(webp()) // 2], "truncated WebP"),
    "animated-webp": (animated_webp, "animated"),
    "webp-pixel-bomb": (lambda: webp_claiming(16_000, 16_000), "pixel bomb|exceeds"),
    "riff-named-jpg": (lambda: b"RIFF\x24\x00\x00\x00AVI LIST", "RIFF"),
    "heic-header-only": (lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
                         "unreadable HEIC"),
    "heic-truncated": (lambda: heic()[:200], "unreadable HEIC"),
    "heic-too-small": (lambda: heic(200, 150), "outside 320..12000"),
    "avif": (lambda: b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "AVIF"),
    "mp4-named-jpg": (lambda: b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42", "MP4"),
    "zero-padded-jpeg": (lambda: b"\x00" * 64 + jpeg(), "unknown leading bytes"),
    "animated-png": (animated_png, "animated"),
    "jpeg-scan-bomb": (scan_bomb, "scans"),
    "scan-bomb-behind-a-comment": (hidden_scan_bomb, "scans"),
}


@pytest.mark.parametrize(("make", "reason"), REFUSED.values(), ids=list(REFUSED))
def test_refused_from_the_header_with_a_reason(make: Callable[[], bytes], reason: str) -> None:
    data = make()
    t0 = time.perf_counter()
    with pytest.raises(CorruptImageError, match=reason):
        inspect_image(data, now=NOW, **LIMITS)
    assert time.perf_counter() - t0 < 1.0  # decided without decoding pixels


ACCEPTED: dict[str, tuple[Callable[[], bytes], str]] = {
    "jpeg": (jpeg, "JPEG"),
    "cmyk-jpeg": (cmyk_jpeg, "JPEG"),
    "end-marker-in-a-comment": (lambda: with_comment(b"\xff\xd9\xff\xda"), "JPEG"),
    "grayscale-jpeg": (lambda: _encode_gray(), "JPEG"),
    "png": (png, "PNG"),
    "png-16-bit": (png16, "PNG"),
    "png-grayscale": (lambda: png("L"), "PNG"),
    "png-alpha": (lambda: png("RGBA"), "PNG"),
    "png-palette": (lambda: png("P"), "PNG"),
    "jpeg-with-trailer": (lambda: jpeg() + b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 4096, "JPEG"),
    "malformed-exif": (broken_exif, "JPEG"),
    "progressive-jpeg": (progressive_jpeg, "JPEG"),
    "multi-picture-jpeg": (multi_picture_jpeg, "JPEG"),
    "heic": (lambda: heic(640, 480), "HEIF"),
    "webp": (webp, "WEBP"),
    "webp-lossless": (lambda: webp(lossless=True), "WEBP"),
    "webp-alpha": (lambda: webp("RGBA"), "WEBP"),
    "grey-heic": (lambda: grey_heic(), "HEIF"),
}


def grey_heic() -> bytes:
    import pillow_heif

    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(_pixels()).convert("L")).save(buf, quality=90)
    return buf.getvalue()


def _encode_gray() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pixels()).convert("L").save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(("make", "fmt"), ACCEPTED.values(), ids=list(ACCEPTED))
def test_unusual_photos_are_read_as_bgr(make: Callable[[], bytes], fmt: str) -> None:
    data = make()
    facts = inspect_image(data, now=NOW, **LIMITS)
    image, _ = decode_upright(data, 1280, size_wh=facts.size_wh, orientation=facts.orientation)
    assert facts.format == fmt
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8


def test_a_jpeg_with_scans_up_to_the_limit_passes_the_header_checks() -> None:
    # (its repeated scans are no progression a decoder accepts: the count is what is tested)
    assert inspect_image(scan_bomb(MAX_JPEG_SCANS - 12), now=NOW, **LIMITS).format == "JPEG"


def _cut_short() -> bytes:
    """A JPEG cut in half whose end marker was written back (a camera's interrupted save):
    every header is whole, and a lenient decoder greys out the lower half."""
    data = jpeg()
    return data[:len(data) // 2] + b"\xff\xd9"


def _progressive_cut_short() -> bytes:
    data = progressive_jpeg()
    return data[:len(data) // 2] + b"\xff\xd9"


def _cmyk_cut_short() -> bytes:
    data = cmyk_jpeg()
    return data[:len(data) // 2] + b"\xff\xd9"


@pytest.mark.parametrize("make", [_cut_short, _progressive_cut_short, _cmyk_cut_short],
                         ids=["baseline", "progressive", "cmyk"])
def test_a_jpeg_whose_data_ends_early_is_refused_not_greyed_out(
        make: Callable[[], bytes]) -> None:
    data = make()
    facts = inspect_image(data, now=NOW, **LIMITS)  # the headers are whole
    with pytest.raises(ValueError, match="corrupt JPEG data"):
        decode_upright(data, 1280, size_wh=facts.size_wh, orientation=facts.orientation)


def test_padding_before_the_end_marker_is_no_corruption() -> None:
    # Some cameras write a few bytes between the image data and its end marker
    data = jpeg()
    padded = data[:-2] + b"\x00\x00\x00" + data[-2:]
    facts = inspect_image(padded, now=NOW, **LIMITS)
    image, _ = decode_upright(padded, 1280, size_wh=facts.size_wh)
    assert image.shape == (480, 640, 3)


def _photo_like() -> np.ndarray:
    """Gradients with grain: a photo's entropy-coded data, as a camera's."""
    yy, xx = np.mgrid[0:480, 0:640]
    smooth = np.dstack([xx * 255 // 640, yy * 255 // 480, (xx + yy) * 255 // 1120])
    grain = np.random.default_rng(3).integers(-20, 20, smooth.shape)
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def test_damage_inside_the_image_data_is_refused_not_read_as_another_photo() -> None:
    # Bytes overwritten inside the scan: the Huffman decoder loses step, fills every block
    # before the data runs out, and leaves image data over before the end marker
    clean = cv2.imencode(".jpg", _photo_like(), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    rng = np.random.default_rng(1)
    sos = clean.find(b"\xff\xda")
    damaged = []
    for _ in range(40):
        d = bytearray(clean)
        at = int(rng.integers(sos + 400, len(clean) - 4000))
        d[at:at + 4] = rng.integers(0, 0xFF, 4, np.uint8).tobytes()  # never a marker
        try:
            simplejpeg.decode_jpeg(bytes(d), strict=True)
        except ValueError as exc:
            if "extraneous bytes before marker 0xd9" in str(exc):
                damaged.append(bytes(d))
    assert damaged  # the complaint a camera's padding also draws
    truth = cv2.imdecode(np.frombuffer(clean, np.uint8), cv2.IMREAD_COLOR).astype(int)
    for data in damaged:
        lenient = simplejpeg.decode_jpeg(data, colorspace="BGR", strict=False).astype(int)
        rows_wrong = (np.abs(lenient - truth).mean(axis=(1, 2)) > 5).sum()
        assert rows_wrong >= 24  # read leniently, rows of it shifted and miscoloured
        facts = inspect_image(data, now=NOW, **LIMITS)  # every header and marker is whole
        with pytest.raises(ValueError, match="corrupt JPEG data"):
            decode_upright(data, 1280, size_wh=facts.size_wh, orientation=facts.orientation)


def _app(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _jfif_revision(data: bytes) -> bytes:
    at = data.find(b"JFIF\0") + 5
    return data[:at] + b"\x02\x01" + data[at + 2:]


@pytest.mark.parametrize("damage", [
    lambda d: d[:2] + _app(0xE2, b"ICC_PROFILE\0\x01\x02" + bytes(200)) + d[2:],
    _jfif_revision,
], ids=["icc-chunk-lost", "jfif-revision"])
def test_metadata_libjpeg_complains_of_leaves_the_photo_readable(
        damage: Callable[[bytes], bytes]) -> None:
    clean = cv2.imencode(".jpg", _photo_like())[1].tobytes()
    data = damage(clean)
    with pytest.raises(ValueError):  # strict libjpeg refuses the file as it is
        simplejpeg.decode_jpeg(data, strict=True)
    facts = inspect_image(data, now=NOW, **LIMITS)
    image, _ = decode_upright(data, 1280, size_wh=facts.size_wh, orientation=facts.orientation)
    assert np.array_equal(image, cv2.imdecode(np.frombuffer(clean, np.uint8), cv2.IMREAD_COLOR))


@pytest.mark.parametrize("segment", [
    _app(0xE2, b"ICC_PROFILE\0"),  # an ICC segment holding its name alone
    _app(0xEE, b"Adobe"),  # an Adobe segment cut short
], ids=["icc-name-only", "adobe-cut-short"])
def test_metadata_pillow_cannot_parse_is_read_as_none_its_exif_kept(segment: bytes) -> None:
    clean = jpeg(orientation=6)
    data = clean[:2] + segment + clean[2:]
    facts = inspect_image(data, now=NOW, **LIMITS)
    image, _ = decode_upright(data, 1280, size_wh=facts.size_wh, orientation=facts.orientation)
    assert facts.orientation == 6 and image.shape == (640, 480, 3)


def test_a_refusal_names_the_fault_not_an_object() -> None:
    data = bytearray(png())
    data[29] ^= 0xFF  # the header chunk's checksum
    with pytest.raises(CorruptImageError, match=r"^not a readable PNG: its headers are "
                                                r"malformed$"):
        inspect_image(bytes(data), now=NOW, **LIMITS)


@pytest.mark.parametrize(("factor", "long_side"), [(1, 4001), (2, 2000), (4, 1000), (8, 500)])
def test_a_jpeg_decodes_at_each_reduction_as_opencv_does(factor: int, long_side: int) -> None:
    from pipeline.image import decode_reduced

    rng = np.random.default_rng(1)
    pixels = cv2.GaussianBlur(rng.integers(0, 255, (1201, 4001, 3), np.uint8), (0, 0), 2)
    data = cv2.imencode(".jpg", pixels)[1].tobytes()
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
    image, scale = decode_reduced(data, long_side)
    assert np.array_equal(image, cv2.imdecode(np.frombuffer(data, np.uint8), flags))
    assert scale == image.shape[1] / 4001 and image.shape[1] == -(-4001 // factor)


@pytest.mark.parametrize(("value", "expected"), [
    (6, 6), (8, 8), (1, 1), (0, 1), (9, 1), (65535, 1)],
    ids=["6", "8", "1", "zero", "nine", "huge"])
def test_orientation_values_outside_1_to_8_read_as_1(value: int, expected: int) -> None:
    assert inspect_image(jpeg(orientation=value), now=NOW, **LIMITS).orientation == expected


def test_malformed_exif_reads_as_no_exif() -> None:
    facts = inspect_image(broken_exif(), now=NOW, **LIMITS)
    assert (facts.orientation, facts.taken) == (1, None)


@pytest.mark.parametrize(("value", "ok"), [
    ("2026:11:24 09:30:00", True),
    ("2026:11:25 09:30:00", True),  # a camera clock a few hours ahead
    ("2027:01:01 00:00:00", False),  # the future
    ("1999:12:31 23:59:59", False),  # before digital shelf cameras
    ("1970:01:01 00:00:00", False),
    ("0000:00:00 00:00:00", False),
    ("garbage", False),
    ("2026:13:45 99:99:99", False),
])
def test_implausible_capture_dates_are_ignored(value: str, ok: bool) -> None:
    assert (parse_exif_time(value, now=NOW) is not None) is ok
    facts = inspect_image(jpeg(taken=value), now=NOW, **LIMITS)
    assert (facts.taken is not None) is ok


@pytest.mark.parametrize(("taken", "uploaded", "day"), [
    ("2026-11-24T09:30:00+00:00", "2026-11-24T09:31:00+00:00", "2026-11-24"),
    ("2026-11-23T23:50:00+00:00", "2026-11-24T00:05:00+00:00", "2026-11-23"),  # late upload
    ("2026-11-01T10:00:00+00:00", "2026-11-24T09:00:00+00:00", "2026-11-01"),  # a backlog
    ("2000-01-01T00:03:12+00:00", "2026-11-24T09:00:00+00:00", "2026-11-24"),  # clock reset
    ("2025-11-24T09:30:00+00:00", "2026-11-24T09:31:00+00:00", "2026-11-24"),  # a year off
    ("2026-11-26T09:30:00+00:00", "2026-11-24T09:31:00+00:00", "2026-11-24"),  # days ahead
    (None, "2026-11-24T09:31:00+00:00", "2026-11-24"),
])
def test_a_photo_is_filed_under_its_capture_day_only_when_the_upload_makes_it_credible(
        taken: str | None, uploaded: str, day: str) -> None:
    from pipeline.messages import PhotoRef, StageMessage
    from pipeline.tasks.steps import capture_time, filed_day

    msg = StageMessage(photo=PhotoRef(bucket="b", key="raw/S/A/B/c/p.jpg",
                                      event_time=datetime.fromisoformat(uploaded)))

    assert filed_day(capture_time(taken, msg, max_age_days=30), msg) == day


@pytest.mark.parametrize(("size_wh", "long_side"), [
    ((4000, 3000), 1280),  # a phone photo
    ((3000, 4000), 1280),
    ((3840, 2160), 1280),  # 16:9, a fixed camera: as before
    ((4000, 2000), 1280),  # 2:1
    ((6144, 2048), 1920),  # 3:1, a wide fixture: its short side stays 640
    ((2048, 10752), 3360),  # 5.25:1 upright
    ((900, 300), 900),  # never more than its own
    ((1000, 800), 1000),
])
def test_a_wide_photo_keeps_its_short_side_at_the_working_size(
        size_wh: tuple[int, int], long_side: int) -> None:
    from pipeline.image import working_long_side

    assert working_long_side(size_wh, 1280) == long_side


def test_an_iphone_heic_is_read_upright_with_its_capture_time() -> None:
    # Given a HEIC photographed with the phone turned (EXIF and container say: rotate 90°)
    source = np.zeros((360, 480, 3), np.uint8)
    source[:120, :240] = (0, 0, 255)  # a red block top left, as stored
    source[240:, 300:] = (255, 0, 0)
    data = heic(image=source[:, :, ::-1].copy(), orientation=6, taken="2026:11:24 09:30:00")

    # When ingest reads its header and decodes it
    facts = inspect_image(data, now=NOW, **LIMITS)
    upright, scale = decode_upright(data, 1280, size_wh=facts.size_wh,
                                    orientation=facts.orientation)

    # Then it is upright once (not turned twice), dated, and at full scale
    expected = np.rot90(source, k=-1)  # Orientation 6: turn 90° clockwise
    assert facts.format == "HEIF" and facts.size_wh == (360, 480)
    assert facts.taken == datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    assert upright.shape == expected.shape and scale == 1.0
    assert np.abs(upright.astype(int) - expected.astype(int)).mean() < 8


def test_a_heic_with_damaged_headers_is_refused_with_a_reason_never_a_crash() -> None:
    import random

    base = heic()
    rnd = random.Random(1)
    outcomes = set()
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rnd.randint(1, 4)):  # bytes of the boxes that describe the image
            data[rnd.randrange(8, min(len(data), 600))] = rnd.randrange(256)
        try:
            inspect_image(bytes(data), now=NOW, **LIMITS)
            outcomes.add("read")
        except CorruptImageError:
            outcomes.add("refused")
    assert "refused" in outcomes


def test_a_png_turned_by_its_exif_is_read_upright_as_a_jpeg_is() -> None:
    e = Image.Exif()
    e[0x0112] = 6  # turned a quarter: stored 640 x 480, upright 480 x 640
    data = png(exif=e.tobytes())
    facts = inspect_image(data, now=NOW, **LIMITS)
    image, _ = decode_upright(data, 1280, size_wh=facts.size_wh, orientation=facts.orientation)
    assert facts.orientation == 6 and image.shape == (640, 480, 3)
    # And every reader of orientation agrees with ingest (evaluation reads it on its own)
    again, _ = decode_upright(data, 1280)
    assert np.array_equal(again, image)


def test_a_webp_turned_by_its_exif_is_read_upright_with_its_capture_time() -> None:
    e = Image.Exif()
    e[0x0112] = 6  # turned a quarter: stored 640 x 480, upright 480 x 640
    e.get_ifd(0x8769)[0x9003] = "2026:11:20 10:00:00"
    data = webp(exif=e.tobytes())
    facts = inspect_image(data, now=NOW, **LIMITS)
    image, _ = decode_upright(data, 1280, size_wh=facts.size_wh, orientation=facts.orientation)
    assert (facts.format, facts.orientation) == ("WEBP", 6) and image.shape == (640, 480, 3)
    assert facts.taken == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


# Saturated colours, where the spaces differ most, and greys, where they agree.
_SWATCHES = np.array([[200, 30, 30], [40, 160, 60], [30, 60, 220], [240, 200, 20],
                      [128, 128, 128], [250, 250, 250]], np.uint8)  # RGB


def _swatch_photo() -> np.ndarray:
    """480 x 640 RGB, one swatch per band."""
    return np.repeat(np.repeat(_SWATCHES[None], 480, axis=0), 107, axis=1)[:, :640]


def _with_profile(fmt: str, profile: bytes | None) -> bytes:
    buf = io.BytesIO()
    kw: dict[str, object] = {"icc_profile": profile} if profile else {}
    if fmt == "JPEG":
        kw.update(quality=100, subsampling=0)
    Image.fromarray(_swatch_photo()).save(buf, fmt, **kw)
    return buf.getvalue()


def _decoded_swatches(data: bytes) -> np.ndarray:
    facts = inspect_image(data, now=NOW, **LIMITS)
    image, _ = decode_upright(data, 1280, size_wh=facts.size_wh, orientation=facts.orientation,
                              icc_profile=facts.icc_profile)
    return image[240, 53::107][:, ::-1].astype(float)  # RGB at each band's middle


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize(("name", "primaries"), [
    ("Display P3", icc_profiles.DISPLAY_P3_PRIMARIES),
    ("Adobe RGB (1998)", icc_profiles.ADOBE_RGB_PRIMARIES),
], ids=["display-p3", "adobe-rgb"])
def test_a_photo_in_a_wide_colour_space_is_read_in_srgb(
        fmt: str, name: str, primaries: tuple[tuple[float, float], ...]) -> None:
    # An iPhone's photos are in Display P3: read as sRGB, its red can would be duller than
    # the same can's packshot
    data = _with_profile(fmt, icc_profiles.display_profile(name, primaries))
    expected = icc_profiles.as_srgb(_SWATCHES, primaries)
    got = _decoded_swatches(data)
    assert np.abs(got - expected).max() <= 4
    assert np.abs(got - _SWATCHES).max() >= 15  # (what it was read as before)


def test_an_iphone_heic_in_display_p3_is_read_in_srgb() -> None:
    profile = icc_profiles.display_profile("Display P3", icc_profiles.DISPLAY_P3_PRIMARIES)
    heif = pillow_heif.from_bytes(mode="RGB", size=(640, 480),
                                  data=np.ascontiguousarray(_swatch_photo()).tobytes())
    heif.info["icc_profile"] = profile
    buf = io.BytesIO()
    heif.save(buf, quality=-1)  # lossless
    got = _decoded_swatches(buf.getvalue())
    assert np.abs(got - icc_profiles.as_srgb(_SWATCHES, icc_profiles.DISPLAY_P3_PRIMARIES)
                  ).max() <= 6


@pytest.mark.parametrize("profile", [
    None,
    icc_profiles.display_profile("sRGB IEC61966-2.1", icc_profiles.SRGB_PRIMARIES),
    b"not a profile" * 40,  # unusable: taken as sRGB, as a photo without one
], ids=["none", "srgb", "unusable"])
def test_a_photo_in_srgb_or_of_no_usable_profile_keeps_its_pixels(profile: bytes | None
                                                                  ) -> None:
    plain = _decoded_swatches(_with_profile("PNG", None))
    assert np.array_equal(_decoded_swatches(_with_profile("PNG", profile)), plain)
    assert np.abs(plain - _SWATCHES).max() == 0


def test_the_same_bytes_sent_again_the_next_day_are_filed_under_their_first_day() -> None:
    # A phone's sync sends yesterday evening's photo (no EXIF time) again in the morning
    from pipeline.messages import PhotoRef, StageMessage
    from pipeline.settings import get_settings
    from pipeline.storage.ledger import MemoryLedger
    from pipeline.storage.memory import MemoryStore
    from pipeline.tasks import steps
    from pipeline.tasks.runtime import Runtime

    rt = Runtime(get_settings(), MemoryStore(), None, 0, MemoryLedger())  # type: ignore[arg-type]
    data = png()

    def upload(n: int, at: str) -> StageMessage:
        return StageMessage(photo=PhotoRef(
            bucket="raw", key=f"raw/S1/A1/B1/c1/{n}.png", version_id=str(n),
            event_time=datetime.fromisoformat(at)))

    first = steps.ingest_bytes(data, upload(1, "2026-11-24T21:00:00+00:00"), rt)
    again = steps.ingest_bytes(data, upload(2, "2026-11-25T06:00:00+00:00"), rt)
    other = steps.ingest_bytes(png("L"), upload(3, "2026-11-25T06:05:00+00:00"), rt)

    assert first.sha256 == again.sha256
    assert (first.captured_date, again.captured_date) == ("2026-11-24", "2026-11-24")
    assert other.captured_date == "2026-11-25"  # a new photo is filed under its upload day

