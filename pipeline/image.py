"""Image container facts read without decoding pixels (EXIF orientation)."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from pipeline.core.orientation import ORIENTATIONS

TAG_ORIENTATION = 0x0112


def read_orientation(data: bytes) -> int:
    """EXIF Orientation of an encoded image; 1 when absent or invalid."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            value = im.getexif().get(TAG_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return 1
    return int(value) if value in ORIENTATIONS else 1
