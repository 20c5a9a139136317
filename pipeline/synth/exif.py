"""EXIF as phones write it: orientation plus the personal data ingest must strip."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image as PILImage
from PIL.TiffImagePlugin import IFDRational

TAG_ORIENTATION = 0x0112
TAG_MAKE = 0x010F
TAG_MODEL = 0x0110
TAG_EXIF_IFD = 0x8769
TAG_GPS_IFD = 0x8825
TAG_DATETIME_ORIGINAL = 0x9003
TAG_BODY_SERIAL = 0xA431
PHONES = (("Apple", "iPhone 15"), ("samsung", "SM-S918B"), ("Google", "Pixel 8"),
          ("Zebra", "TC58"), ("Axis", "P1455-LE"))
ORIENTATION_WEIGHTS = np.array([0.4, 0.04, 0.1, 0.04, 0.04, 0.22, 0.04, 0.12])


@dataclass(frozen=True)
class PhotoExif:
    orientation: int
    make: str
    model: str
    serial: str
    datetime_original: str
    gps: tuple[float, float]

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def draw_exif(rng: np.random.Generator) -> PhotoExif:
    make, model = PHONES[int(rng.integers(0, len(PHONES)))]
    o = int(rng.choice(np.arange(1, 9), p=ORIENTATION_WEIGHTS))
    day, hour, minute = int(rng.integers(1, 29)), int(rng.integers(7, 22)), int(rng.integers(60))
    return PhotoExif(o, make, model, f"SN{int(rng.integers(10**9, 10**10))}",
                     f"2026:11:{day:02d} {hour:02d}:{minute:02d}:00",
                     (float(rng.uniform(-60, 60)), float(rng.uniform(-170, 170))))


def _dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    v = abs(value)
    d = int(v)
    m = int((v - d) * 60)
    s = round(((v - d) * 60 - m) * 60 * 100)
    return IFDRational(d, 1), IFDRational(m, 1), IFDRational(s, 100)


def exif_bytes(meta: PhotoExif) -> bytes:
    """The TIFF-structured EXIF payload (``Exif\\0\\0`` + IFDs) for a JPEG APP1 segment."""
    exif = PILImage.Exif()
    exif[TAG_ORIENTATION] = meta.orientation
    exif[TAG_MAKE] = meta.make
    exif[TAG_MODEL] = meta.model
    sub = exif.get_ifd(TAG_EXIF_IFD)
    sub[TAG_DATETIME_ORIGINAL] = meta.datetime_original
    sub[TAG_BODY_SERIAL] = meta.serial
    gps = exif.get_ifd(TAG_GPS_IFD)
    lat, lon = meta.gps
    gps[1] = "N" if lat >= 0 else "S"
    gps[2] = _dms(lat)
    gps[3] = "E" if lon >= 0 else "W"
    gps[4] = _dms(lon)
    data = exif.tobytes()
    return data if data.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + data


def insert_app1(jpeg: bytes, payload: bytes) -> bytes:
    """Insert an APP1 segment right after SOI, where EXIF readers look first."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    size = len(payload) + 2
    if size > 0xFFFF:
        raise ValueError("APP1 payload too large")
    return jpeg[:2] + b"\xff\xe1" + size.to_bytes(2, "big") + payload + jpeg[2:]
