"""ICC v2 display profiles (RGB primaries, D65 white, the sRGB tone curve) built from their
chromaticities, as phones and cameras embed them, and the colour conversion they stand
for computed directly, to check a colour-managed decode against."""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

D65 = (0.3127, 0.3290)
SRGB_PRIMARIES = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))
DISPLAY_P3_PRIMARIES = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))  # an iPhone's
ADOBE_RGB_PRIMARIES = ((0.640, 0.330), (0.210, 0.710), (0.150, 0.060))
_D50 = np.array([0.9642, 1.0, 0.8249])
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367],
                      [0.0389, -0.0685, 1.0296]])


def _xyz(xy: tuple[float, float]) -> npt.NDArray[np.float64]:
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def rgb_to_xyz(primaries: tuple[tuple[float, float], ...]) -> npt.NDArray[np.float64]:
    """Linear RGB to XYZ (D65 white at Y = 1)."""
    p = np.stack([_xyz(c) for c in primaries], axis=1)
    return p * np.linalg.solve(p, _xyz(D65))


def decode_curve(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def encode_curve(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


def as_srgb(rgb: npt.NDArray[np.uint8], primaries: tuple[tuple[float, float], ...]
            ) -> npt.NDArray[np.float64]:
    """8-bit RGB in the space of ``primaries`` (sRGB curve, D65) as sRGB, 0-255, unrounded
    (out-of-gamut colours clipped)."""
    linear = decode_curve(rgb.astype(np.float64) / 255.0)
    m = np.linalg.inv(rgb_to_xyz(SRGB_PRIMARIES)) @ rgb_to_xyz(primaries)
    return np.asarray(encode_curve(linear @ m.T) * 255.0, np.float64)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz_tag(v: npt.NDArray[np.float64]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(float(c)) for c in v)


def _desc_tag(text: str) -> bytes:
    ascii_ = text.encode() + b"\0"
    return (b"desc\0\0\0\0" + struct.pack(">I", len(ascii_)) + ascii_ + b"\0" * 8
            + b"\0" * 3 + b"\0" * 67)


def display_profile(name: str, primaries: tuple[tuple[float, float], ...]) -> bytes:
    """An ICC v2 monitor profile: ``primaries`` and D65 adapted to the D50 connection space
    (Bradford), the sRGB tone curve as a 1,024-entry table."""
    adapt = np.linalg.inv(_BRADFORD) @ np.diag((_BRADFORD @ _D50) / (_BRADFORD @ _xyz(D65))) \
        @ _BRADFORD
    colorants = adapt @ rgb_to_xyz(primaries)
    table = decode_curve(np.linspace(0.0, 1.0, 1024))
    curve = b"curv\0\0\0\0" + struct.pack(">I", 1024) + b"".join(
        struct.pack(">H", round(float(v) * 65535)) for v in table)
    tags = [(b"desc", _desc_tag(name)), (b"cprt", b"text\0\0\0\0test profile\0"),
            (b"wtpt", _xyz_tag(_D50)), (b"rXYZ", _xyz_tag(colorants[:, 0])),
            (b"gXYZ", _xyz_tag(colorants[:, 1])), (b"bXYZ", _xyz_tag(colorants[:, 2])),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    at, index, body = 128 + 4 + 12 * len(tags), b"", b""
    for sig, data in tags:
        body += b"\0" * (-(at + len(body)) % 4)
        index += sig + struct.pack(">II", at + len(body), len(data))
        body += data
    size = at + len(body)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 24
              + b"\0" * 4 + _xyz_tag(_D50)[8:] + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + index + body
