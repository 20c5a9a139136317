"""Encoded-image facts and decoding: format sniffing, header checks, EXIF, DCT-scaled decode.

Photos come from cameras and from anyone who can write to the bucket: everything that can
be decided from the header (format, dimensions, pixel count, animation) is decided before a
single pixel is decoded, so a pixel bomb costs a header read, not gigabytes.
"""

from __future__ import annotations

import functools
import io
import logging
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pillow_heif
import simplejpeg
from PIL import Image, ImageCms, UnidentifiedImageError

from pipeline.core.lighting import resize_long_side
from pipeline.core.orientation import ORIENTATIONS, apply_orientation
from pipeline.errors import CorruptImageError, PermanentError

TAG_ORIENTATION = 0x0112
TAG_EXIF_IFD = 0x8769
TAG_DATETIME_ORIGINAL = 0x9003
EARLIEST_PLAUSIBLE = datetime(2000, 1, 1, tzinfo=UTC)
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# ISO media (``ftyp``) brands of HEIF stills: an iPhone's .HEIC, Android's .heif.
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm",
                         b"hevs", b"mif1", b"msf1"})
NOT_A_PHOTO = "not a JPEG, PNG, HEIC or WebP photo"  # what a refusal by format says
# What else arrives named .jpg, told by its first bytes.
OTHER_MAGIC = ((b"%PDF", "PDF"), (b"GIF8", "GIF"), (b"RIFF", "RIFF (AVI, WAV)"), (b"BM", "BMP"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"<", "HTML/XML"),
               (b"PK\x03\x04", "ZIP"))

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFacts:
    """What the header says: format, stored size, EXIF orientation, capture time and the
    colour profile the pixels are in."""

    format: str  # JPEG | PNG | HEIF | WEBP
    size_wh: tuple[int, int]
    orientation: int
    taken: datetime | None  # DateTimeOriginal when present and plausible
    icc_profile: bytes | None = None  # the embedded ICC profile; None: sRGB


def _ftyp_brands(data: bytes) -> list[bytes]:
    """The major and compatible brands of an ISO media file's ``ftyp`` box."""
    size = int.from_bytes(data[:4], "big")
    box = data[8:min(max(size, 16), 4096, len(data))]
    return [box[i:i + 4] for i in range(0, len(box) - 3, 4) if i != 4]  # 4..8: minor version


def sniff_format(data: bytes) -> str:
    """JPEG, PNG, HEIF or WEBP from the magic bytes; :class:`CorruptImageError` naming
    anything else."""
    if not data:
        raise CorruptImageError("empty file (0 bytes)")
    if data.startswith(JPEG_MAGIC):
        return "JPEG"
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":  # phones' and web apps' uploads
        return "WEBP"
    if data[4:8] == b"ftyp":
        brands = _ftyp_brands(data)
        if b"avif" in brands or b"avis" in brands:
            raise CorruptImageError(f"an AVIF file, {NOT_A_PHOTO}")
        if HEIF_BRANDS.intersection(brands):
            return "HEIF"
        raise CorruptImageError(f"an MP4/ISO media file (a video?), {NOT_A_PHOTO}")
    head = data[:16].lstrip()
    for magic, name in OTHER_MAGIC:
        if head.startswith(magic):
            raise CorruptImageError(f"a {name} file, {NOT_A_PHOTO}")
    raise CorruptImageError(f"{NOT_A_PHOTO} (unknown leading bytes)")


MAX_JPEG_SCANS = 100  # progressive encoders write about 10; each scan is a decode of its own
# Cameras write a dozen segments (APPn, DQT, DHT, SOF, DRI, SOS; an ICC profile in up to a few
# dozen chunks); millions of empty ones make a small file a long read.
MAX_JPEG_SEGMENTS = 1000
# In entropy-coded data a marker is FF followed by anything but 00 (a stuffed byte), D0-D7
# (restarts) and FF (fill).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_end(data: bytes) -> int:
    """Where the primary image's end marker (EOI) is; :class:`CorruptImageError` when it has
    no scan, when its segments do not follow one another (truncated, or bytes where a
    marker should be), or when they are so many that reading them is itself the attack.

    Every segment is walked by its length, and between scans the entropy-coded data is
    skipped to the next marker: a comment can hold the bytes FF D9 without ending the image,
    and a scan counts wherever it is. The image ends at its EOI, so what a camera appends
    after it (motion photos, the extra pictures of an MPO) neither makes it incomplete nor
    counts, and an EXIF thumbnail's EOI, inside its APP1 segment, is skipped with it."""
    i, scans, segments, n = 2, 0, 0, len(data)
    while True:
        if scans:  # in entropy-coded data: on to the next marker
            found = _NEXT_MARKER.search(data, i)
            if found is None:
                raise CorruptImageError("truncated JPEG: the file ends before its last marker")
            i = found.start()
        else:
            while i + 1 < n and data[i] == 0xFF and data[i + 1] == 0xFF:
                i += 1  # a fill byte before a marker: counted as a segment
                segments += 1
                if segments > MAX_JPEG_SEGMENTS:
                    break
        if i + 2 > n:
            raise CorruptImageError("truncated JPEG: the file ends before its last marker")
        if data[i] != 0xFF:
            raise CorruptImageError(f"not a JPEG marker at byte {i} (0x{data[i]:02x} where "
                                    "0xff should be): damaged or padded data")
        marker = data[i + 1]
        if marker == 0xD9:  # end of image
            if not scans:
                raise CorruptImageError("JPEG without image data (no scan before its end)")
            return i
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise CorruptImageError(f"JPEG with more than {MAX_JPEG_SEGMENTS} segments or "
                                    "fill bytes: not a camera's photo")
        if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xD8):  # no length
            i += 2
            continue
        if i + 4 > n:
            raise CorruptImageError("truncated JPEG: the file ends before its last marker")
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                # Each scan is decoded in full: thousands of tiny ones hold a worker for
                # minutes.
                raise CorruptImageError(f"JPEG with more than {MAX_JPEG_SCANS} scans: a "
                                        "decoding bomb")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")


def parse_exif_time(value: object, *, now: datetime) -> datetime | None:
    """``YYYY:MM:DD HH:MM:SS`` as written by cameras; None when unreadable or implausible
    (before 2000, or more than a day ahead of ``now``)."""
    if not isinstance(value, str):
        return None
    try:
        taken = datetime.strptime(value.strip("\x00 "), "%Y:%m:%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    if taken < EARLIEST_PLAUSIBLE or taken > now + timedelta(days=1):
        return None
    return taken


def inspect_image(data: bytes, *, max_pixels: int, min_side: int, max_side: int,
                  max_aspect: float | None = None, now: datetime | None = None) -> ImageFacts:
    """Read and check the headers only; raises :class:`CorruptImageError` with the reason
    (with ``max_aspect``, also for a photo longer than that many times its short side)."""
    fmt = sniff_format(data)
    if fmt == "HEIF":
        heif = _open_heif(data)
        w, h = heif.size
        _check_size(w, h, max_pixels=max_pixels, min_side=min_side, max_side=max_side,
                    max_aspect=max_aspect)
        # libheif turns the pixels upright by the container's own transforms (irot, imir),
        # which iPhones write beside an EXIF Orientation saying the same: that one is moot.
        return ImageFacts("HEIF", (w, h), 1, _exif_taken(heif.info.get("exif"),
                                                         now or datetime.now(UTC)),
                          _profile(heif.info.get("icc_profile")))
    if fmt == "JPEG":
        _jpeg_end(data)
    elif fmt == "WEBP":
        # The RIFF header gives the file's length: one cut short ends before it.
        if len(data) < 8 + int.from_bytes(data[4:8], "little"):
            raise CorruptImageError("truncated WebP: the file ends before its RIFF length")
    elif data.rfind(b"IEND") <= 8:
        raise CorruptImageError(f"truncated {fmt}: the file ends before its last marker")
    try:
        with warnings.catch_warnings():
            # Our own pixel cap below decides; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = _open_photo(data, fmt)
        with im:
            # A JPEG that carries more pictures (camera previews, depth maps, gain maps) is
            # an MPO to Pillow; its first picture is the photo, and that is what is decoded.
            multi = im.format == "MPO" and fmt == "JPEG"
            if im.format != fmt and not multi:
                raise CorruptImageError(f"header says {im.format}, bytes say {fmt}")
            w, h = im.size
            _check_size(w, h, max_pixels=max_pixels, min_side=min_side, max_side=max_side,
                        max_aspect=max_aspect)
            if not multi and getattr(im, "is_animated", False):
                raise CorruptImageError("animated image: a shelf photo is a single frame")
            orientation, taken = _exif(im, now or datetime.now(UTC))
            icc = _profile(im.info.get("icc_profile"))
    except CorruptImageError:
        raise
    except UnidentifiedImageError as exc:  # its message names an object, not the fault
        raise CorruptImageError(f"not a readable {fmt}: its headers are malformed") from exc
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(f"not a readable {fmt}: {exc}") from exc
    return ImageFacts(fmt, (int(w), int(h)), orientation, taken, icc)


def _profile(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | bytearray) and value else None


def _open_photo(data: bytes, fmt: str) -> Image.Image:
    """Pillow's view of the photo's headers. A JPEG with metadata Pillow cannot parse (an
    ICC segment holding only its name, an Adobe segment cut short), which libjpeg passes
    over, is read without it, its EXIF kept."""
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        pixels = _pixel_segments(data, keep=_EXIF_MARKERS) if fmt == "JPEG" else data
        if pixels is data:
            raise
        return Image.open(io.BytesIO(pixels))


def _check_size(w: int, h: int, *, max_pixels: int, min_side: int, max_side: int,
                max_aspect: float | None) -> None:
    if w * h > max_pixels:
        raise CorruptImageError(f"{w}x{h} exceeds the {max_pixels}-pixel bomb guard")
    if min(w, h) < min_side or max(w, h) > max_side:
        raise CorruptImageError(f"{w}x{h} is outside {min_side}..{max_side} pixels")
    if max_aspect is not None and max(w, h) > max_aspect * min(w, h):
        raise CorruptImageError(
            f"{w}x{h} is {max(w, h) / min(w, h):.1f} times as long as it is wide (at most "
            f"{max_aspect:g}): a panorama of several bays; upload one photo per bay")


def _open_heif(data: bytes) -> pillow_heif.HeifFile:
    """A HEIF file's primary image, headers read, pixels not yet decoded."""
    try:
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
        if len(heif) == 0:
            raise CorruptImageError("unreadable HEIC/HEIF: it holds no image")
        heif.size  # noqa: B018 - the primary image's header, read now
    except (ValueError, RuntimeError, OSError, SyntaxError, EOFError, IndexError) as exc:
        raise CorruptImageError(f"unreadable HEIC/HEIF: {exc}") from exc
    return heif


def decode_heif(data: bytes) -> npt.NDArray[np.uint8]:
    """A HEIF photo's primary image, upright (libheif applies its transforms), as BGR.
    Raises ``ValueError`` for data that does not decode."""
    try:
        rgb = np.asarray(_open_heif(data))
    except (CorruptImageError, RuntimeError, OSError) as exc:
        raise ValueError(f"HEIC/HEIF pixels do not decode: {exc}") from exc
    if rgb.dtype == np.uint8 and (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 1)):
        # grey, as a grey JPEG or PNG is read
        return np.asarray(cv2.cvtColor(rgb.reshape(rgb.shape[:2]), cv2.COLOR_GRAY2BGR),
                          np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise ValueError(f"HEIC/HEIF of {rgb.shape} {rgb.dtype} pixels, not 8-bit colour "
                         "or grey")
    return np.asarray(cv2.cvtColor(rgb[:, :, :3], cv2.COLOR_RGB2BGR), np.uint8)


def _exif_taken(exif: object, now: datetime) -> datetime | None:
    """A plausible capture time from raw EXIF bytes (a HEIF's); None when there is none."""
    if not isinstance(exif, bytes) or not exif:
        return None
    try:
        tags = Image.Exif()
        tags.load(exif)
        taken = tags.get_ifd(TAG_EXIF_IFD).get(TAG_DATETIME_ORIGINAL)
    except Exception:  # Pillow raises many kinds on malformed EXIF; it is metadata only
        return None
    return parse_exif_time(taken, now=now)


def _exif_read_free(im: Image.Image) -> bool:
    """Whether ``im``'s EXIF can be read from what its open read: a JPEG's always; a PNG's
    when its eXIf chunk comes before the pixels (one after them would cost a full decode,
    and is read as none, here and in every reader of orientation alike)."""
    return im.format != "PNG" or "exif" in im.info


def _exif(im: Image.Image, now: datetime) -> tuple[int, datetime | None]:
    """Orientation (1 when absent or invalid) and a plausible capture time; a broken EXIF
    block reads as none, never as a failure."""
    if not _exif_read_free(im):
        return 1, None
    try:
        exif = im.getexif()
        value = exif.get(TAG_ORIENTATION, 1)
        taken = exif.get_ifd(TAG_EXIF_IFD).get(TAG_DATETIME_ORIGINAL)
    except Exception:  # Pillow raises many kinds on malformed EXIF; it is metadata only
        return 1, None
    orientation = int(value) if isinstance(value, int) and value in ORIENTATIONS else 1
    return orientation, parse_exif_time(taken, now=now)


def encode_jpeg(image: npt.NDArray[np.uint8], quality: int) -> bytes:
    """Pixels only: no EXIF, GPS, XMP, ICC or comment segment survives."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise PermanentError("JPEG encoding failed")
    return bytes(buf.tobytes())


def decode_jpeg(data: bytes) -> npt.NDArray[np.uint8]:
    """A stored artifact back to BGR pixels."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise PermanentError("stored artifact does not decode")
    return np.asarray(arr, np.uint8)
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def _encoded(source: bytes | Path) -> io.BytesIO | Path:
    """What Pillow opens: the bytes, or a file it reads only as far as it needs."""
    return io.BytesIO(source) if isinstance(source, bytes) else source


def read_orientation(source: bytes | Path) -> int:
    """EXIF Orientation of an encoded image (its bytes or its file); 1 when absent or
    invalid."""
    try:
        with Image.open(_encoded(source)) as im:
            value = im.getexif().get(TAG_ORIENTATION, 1) if _exif_read_free(im) else 1
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return 1
    return int(value) if value in ORIENTATIONS else 1


def read_icc_profile(data: bytes) -> bytes | None:
    """The ICC profile embedded in an encoded image; None when absent or unreadable."""
    try:
        if sniff_format(data) == "HEIF":
            return _profile(_open_heif(data).info.get("icc_profile"))
        with Image.open(io.BytesIO(data)) as im:
            return _profile(im.info.get("icc_profile"))
    except (CorruptImageError, UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def image_size(source: bytes | Path) -> tuple[int, int]:
    """``(width, height)`` of the stored pixels of an encoded image (its bytes or its file),
    read from the header only."""
    with Image.open(_encoded(source)) as im:
        w, h = im.size
    return int(w), int(h)


def reduction_for(size_wh: tuple[int, int], min_long_side: int) -> int:
    """The largest DCT reduction (1, 2, 4, 8) that keeps the long side >= ``min_long_side``."""
    long_side = max(size_wh)
    return max([f for f in _REDUCED if long_side / f >= min_long_side] or [1])


def decode_reduced(data: bytes, min_long_side: int, size_wh: tuple[int, int] | None = None
                   ) -> tuple[npt.NDArray[np.uint8], float]:
    """Stored pixels (no EXIF rotation) decoded as small as ``min_long_side`` allows.

    Returns the image and its linear scale relative to full size. ``size_wh`` skips reading
    the header again when the caller has it. Raises ``ValueError`` for data that does not
    decode.
    """
    try:
        full_w, full_h = size_wh or image_size(data)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc
    factor = reduction_for((full_w, full_h), min_long_side)
    strict = _decode_jpeg_strictly(data, factor, (full_w, full_h)) \
        if data.startswith(JPEG_MAGIC) else None
    if strict is not None:
        return strict, strict.shape[1] / full_w
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[factor] |
                       cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None:
        raise ValueError("image data does not decode")
    return np.asarray(arr, np.uint8), arr.shape[1] / full_w


def _decode_jpeg_strictly(data: bytes, factor: int, size_wh: tuple[int, int]
                          ) -> npt.NDArray[np.uint8] | None:
    """A JPEG's stored pixels at 1/``factor`` (libjpeg-turbo's DCT scaling, as OpenCV's
    reduced modes), refused with ``ValueError`` where libjpeg finds the data corrupt: a
    photo cut short, or whose entropy-coded data is damaged, would otherwise decode with
    its lower part grey, or shifted and miscoloured, and its shelves missing from the
    result. Its metadata segments are left out first (:func:`_pixel_segments`): what
    libjpeg says of them is no fault of the pixels. None for the colour spaces
    libjpeg-turbo cannot turn into BGR (CMYK, YCCK): checked here as strictly, then
    decoded by OpenCV."""
    pixels = _pixel_segments(data)
    try:
        space = simplejpeg.decode_jpeg_header(pixels)[2]
    except ValueError as exc:
        raise ValueError(f"not a readable JPEG: {exc}") from exc
    w, h = size_wh
    inks = space not in ("YCbCr", "Gray", "RGB")

    def decode(strict: bool) -> npt.NDArray[np.uint8]:
        return np.asarray(simplejpeg.decode_jpeg(
            pixels, colorspace="CMYK" if inks else "BGR", min_width=-(-w // factor),
            min_height=-(-h // factor), min_factor=factor, strict=strict), np.uint8)

    try:
        image = decode(strict=True)
    except ValueError as exc:
        if not _padding_before_end(pixels, str(exc)):
            raise ValueError(f"corrupt JPEG data ({exc})") from exc
        image = decode(strict=False)
    return None if inks else image


# Segments that carry no pixels (APP0-APP13, APP15, comments); APP14, Adobe's, says how the
# colours are coded and stays, unless too short for libjpeg to read it (12 bytes).
_METADATA_MARKERS = frozenset([*range(0xE0, 0xEE), 0xEF, 0xFE])
_EXIF_MARKERS = frozenset([0xE1])
_ADOBE = b"Adobe"
_ADOBE_LENGTH = 2 + 12  # its length field counts itself
_EXTRANEOUS_AT_END = re.compile(r"(\d+) extraneous bytes before marker 0xd9")


def _pixel_segments(data: bytes, keep: frozenset[int] = frozenset()) -> bytes:
    """``data`` without the metadata segments before its first scan, but those whose marker
    is in ``keep``. libjpeg's complaints about them (a JFIF revision it does not know, an
    ICC profile missing a chunk) would refuse an intact photo under strict decoding; EXIF
    and the rest are read elsewhere. Anything unexpected in the headers leaves the rest as
    it is."""
    parts: list[bytes] = []
    i, kept, n = 2, 2, len(data)
    while i + 4 <= n and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte
            i += 1
            continue
        if marker == 0xDA or not 0xC0 <= marker <= 0xFE:
            break
        length = int.from_bytes(data[i + 2:i + 4], "big")
        end = i + 2 + length
        metadata = marker in _METADATA_MARKERS or (marker == 0xEE and (
            length < _ADOBE_LENGTH or data[i + 4:i + 9] != _ADOBE))
        if metadata and marker not in keep:
            parts.append(data[kept:i])
            kept = end
        i = end
    if not parts:
        return data
    return data[:2] + b"".join(parts) + data[kept:]


def _padding_before_end(data: bytes, complaint: str) -> bool:
    """Whether libjpeg's ``complaint`` is the padding some cameras write between the image
    data and its end marker: bytes before the EOI it had no use for, each 0x00 or 0xFF.
    Data damaged on its way into the file leaves the image's own bytes over instead (its
    blocks run out before the data does), and those are refused."""
    found = _EXTRANEOUS_AT_END.search(complaint)
    if found is None:
        return False
    try:
        end = _jpeg_end(data)
    except CorruptImageError:
        return False
    count = int(found.group(1))
    return 0 < count <= end and not data[end - count:end].strip(b"\x00\xff")


WIDE_ASPECT = 2.0  # beyond it, a photo's short side keeps long_side / WIDE_ASPECT pixels


def working_long_side(size_wh: tuple[int, int], long_side: int) -> int:
    """The long side of a photo's working image: ``long_side``, except that a photo more
    than twice as wide as tall (or tall as wide), a wide bay or a panorama, keeps its short
    side at ``long_side / 2`` (shrunk to ``long_side`` its products would be a few pixels
    tall); never more than its own."""
    w, h = size_wh
    aspect = max(w, h) / max(1, min(w, h))
    return min(max(w, h), round(long_side * max(1.0, aspect / WIDE_ASPECT)))


def decode_upright(data: bytes, long_side: int, *, size_wh: tuple[int, int] | None = None,
                   orientation: int | None = None, icc_profile: bytes | None = None,
                   resize: bool = True) -> tuple[npt.NDArray[np.uint8], float]:
    """Upright pixels at the working size, as ingest stores them: DCT-scaled decode, EXIF
    orientation applied, then (``resize``) downscaled to ``long_side`` (more for a wide
    photo: :func:`working_long_side`), and their colours in sRGB where ``icc_profile``
    (the photo's, from :func:`inspect_image`) says they are in another space.

    Returns the image and its linear scale from the full-size photo. Header facts the caller
    already read (``size_wh``, ``orientation``) are not read again. Raises ``ValueError``
    for data that does not decode.
    """
    if data[4:8] == b"ftyp" and sniff_format(data) == "HEIF":
        upright, scale = decode_heif(data), 1.0  # upright as decoded: no EXIF rotation
        target = working_long_side((upright.shape[1], upright.shape[0]), long_side)
    else:
        try:
            size = size_wh or image_size(data)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"not a readable image: {exc}") from exc
        target = working_long_side(size, long_side)
        stored, scale = decode_reduced(data, target, size)
        o = read_orientation(data) if orientation is None else orientation
        upright = apply_orientation(stored, o)
    if not resize:
        return to_srgb(upright, icc_profile), scale
    small = resize_long_side(upright, target)
    return to_srgb(small, icc_profile), scale * small.shape[1] / upright.shape[1]


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.lru_cache(maxsize=32)
def _srgb_transform(icc_profile: bytes) -> ImageCms.ImageCmsTransform | None:
    """The transform from an embedded RGB profile to sRGB; None where there is nothing to
    do or nothing sound to do it with: a profile that is sRGB already, one of another colour
    space (a grey or CMYK photo is read as before), one that does not parse."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        if source.profile.xcolor_space.strip() != "RGB" or \
                "srgb" in (source.profile.profile_description or "").lower().replace(" ", ""):
            return None
        return ImageCms.buildTransform(source, _SRGB, "RGB", "RGB")
    except (ImageCms.PyCMSError, OSError, TypeError, ValueError) as exc:
        log.warning("an embedded ICC profile is unusable (%s): the colours are taken as sRGB",
                    exc)
        return None


def to_srgb(image: npt.NDArray[np.uint8], icc_profile: bytes | None
            ) -> npt.NDArray[np.uint8]:
    """BGR pixels encoded in ``icc_profile``'s colour space (an iPhone's Display P3, a
    camera's Adobe RGB) as sRGB, the space the catalog's packshots, the detector and the
    colours that name products are in: the same can is then the same colour whichever
    phone took it. ``image`` itself where there is no profile or nothing to do."""
    transform = _srgb_transform(icc_profile) if icc_profile else None
    if transform is None:
        return image
    rgb = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    ImageCms.applyTransform(rgb, transform, inPlace=True)
    return np.asarray(cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR), np.uint8)


def jpeg_roundtrip(image: npt.NDArray[np.uint8], quality: int) -> npt.NDArray[np.uint8]:
    """``image`` as a stage stores it and the next one reads it back."""
    return decode_jpeg(encode_jpeg(image, quality))


@dataclass(frozen=True)
class PreparedPhoto:
    """A photo as the detect stage has it: ``photographed``, the upright working image in
    the photo's own colours (ingest's artifact), ``normalized``, the same with its lighting
    normalized (normalize's), and ``scale``, the linear scale from the photo's stored
    pixels. A detector is fed one of them, as its card asks; a product is named from both:
    its embedding from the normalized one (print and form without the store's colour cast),
    its colours from the photographed one (white balance turns a bin of lemons grey)."""

    photographed: npt.NDArray[np.uint8]
    normalized: npt.NDArray[np.uint8]
    scale: float

    def seen(self, normalized_lighting: bool) -> npt.NDArray[np.uint8]:
        """What a detector fed normalized lighting, or not, is given."""
        return self.normalized if normalized_lighting else self.photographed


def prepare_photo(data: bytes, *, long_side: int, jpeg_quality: int,
                  orientation: int | None = None) -> PreparedPhoto:
    """A photo exactly as the detect stage receives it, from its encoded bytes: upright
    (``orientation`` overrides the EXIF one), at the working size, faces blurred and stored
    (ingest), and its lighting normalized and stored (normalize). Evaluations and benchmarks
    use this, so they measure what the pipeline runs."""
    from pipeline.core.lighting import normalize_lighting
    from pipeline.privacy import blur_faces

    upright, scale = decode_upright(data, long_side, orientation=orientation,
                                    icc_profile=read_icc_profile(data))
    ingested = jpeg_roundtrip(blur_faces(upright)[0], jpeg_quality)
    return PreparedPhoto(ingested, jpeg_roundtrip(normalize_lighting(ingested), jpeg_quality),
                         scale)
