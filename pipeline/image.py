"""Encoded-image facts and decoding: EXIF orientation, DCT-scaled decode."""

from __future__ import annotations

import io

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from pipeline.core.lighting import resize_long_side
from pipeline.core.orientation import ORIENTATIONS, apply_orientation

TAG_ORIENTATION = 0x0112
WORKING_LONG_SIDE = 1280  # detection never needs more; larger photos decode at 1/2, 1/4, 1/8
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def read_orientation(data: bytes) -> int:
    """EXIF Orientation of an encoded image; 1 when absent or invalid."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            value = im.getexif().get(TAG_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return 1
    return int(value) if value in ORIENTATIONS else 1


def image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of the stored pixels, read from the header only."""
    with Image.open(io.BytesIO(data)) as im:
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
    flags = _REDUCED[factor] | cv2.IMREAD_IGNORE_ORIENTATION
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if arr is None:
        raise ValueError("image data does not decode")
    return np.asarray(arr, np.uint8), arr.shape[1] / full_w


def decode_upright(data: bytes, long_side: int, *, size_wh: tuple[int, int] | None = None,
                   orientation: int | None = None, resize: bool = True
                   ) -> tuple[npt.NDArray[np.uint8], float]:
    """Upright pixels at the working size, as ingest stores them: DCT-scaled decode, EXIF
    orientation applied, then (``resize``) downscaled to ``long_side``.

    Returns the image and its linear scale from the full-size photo. Header facts the caller
    already read (``size_wh``, ``orientation``) are not read again.
    """
    stored, scale = decode_reduced(data, long_side, size_wh)
    o = read_orientation(data) if orientation is None else orientation
    upright = apply_orientation(stored, o)
    if not resize:
        return upright, scale
    small = resize_long_side(upright, long_side)
    return small, scale * small.shape[1] / upright.shape[1]
