"""Shoppers' faces are personal data: they are blurred before any artifact is stored.

Faces are found with OpenCV's bundled Haar cascade (frontal faces, shipped inside the
opencv wheel, BSD licence) on a reduced copy of the photo, then each face, with a margin,
is pixelated and blurred beyond recognition in the full-size image.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

CASCADE = "haarcascade_frontalface_default.xml"
DETECT_LONG_SIDE = 800
# A wide photo (a bay seen whole, a panorama) keeps as many pixels across its short side as
# a 4:3 one has at 800: reduced by its long side alone, a shopper's face there would fall
# under the smallest face looked for.
DETECT_SHORT_SIDE = 600
_local = threading.local()


def _cascade() -> Any:
    """One classifier per thread (OpenCV's is not thread-safe), loaded on first use."""
    clf = getattr(_local, "cascade", None)
    if clf is None:
        # The headless wheel's stubs omit cv2.data and CascadeClassifier: reached untyped.
        path = Path(getattr(cv2, "data").haarcascades) / CASCADE  # noqa: B009
        clf = getattr(cv2, "CascadeClassifier")(str(path))  # noqa: B009
        if clf.empty():
            raise RuntimeError(f"OpenCV face cascade missing: {path}")
        _local.cascade = clf
    return clf


def find_faces(image: npt.NDArray[np.uint8], *, min_size_px: int = 40
               ) -> list[tuple[int, int, int, int]]:
    """Face boxes ``(x1, y1, x2, y2)`` in ``image`` pixels.

    Tuned on shelf photos, where printed faces on packs are the false alarms: faces of at
    least ``min_size_px`` at 800 by 600 pixels (5 % of the frame; a wider photo's short side
    at 600), eight neighbours agreeing."""
    h, w = image.shape[:2]
    scale = min(1.0, max(DETECT_LONG_SIDE / max(h, w), DETECT_SHORT_SIDE / min(h, w)))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else image
    gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
    found = _cascade().detectMultiScale(gray, scaleFactor=1.2, minNeighbors=8,
                                        minSize=(min_size_px, min_size_px))
    return [(int(x / scale), int(y / scale), int((x + fw) / scale), int((y + fh) / scale))
            for x, y, fw, fh in (found if len(found) else [])]


def blur_faces(image: npt.NDArray[np.uint8], *, margin: float = 0.25
               ) -> tuple[npt.NDArray[np.uint8], int]:
    """A copy of ``image`` with every face found made unrecognisable, and their count."""
    faces = find_faces(image)
    if not faces:
        return image, 0
    out = image.copy()
    h, w = image.shape[:2]
    for x1, y1, x2, y2 in faces:
        mx, my = int((x2 - x1) * margin), int((y2 - y1) * margin)
        a, b = max(0, x1 - mx), max(0, y1 - my)
        c, d = min(w, x2 + mx), min(h, y2 + my)
        region = out[b:d, a:c]
        tiny = cv2.resize(region, (max(1, (c - a) // 16), max(1, (d - b) // 16)),
                          interpolation=cv2.INTER_AREA)
        coarse = cv2.resize(tiny, (c - a, d - b), interpolation=cv2.INTER_NEAREST)
        out[b:d, a:c] = cv2.GaussianBlur(coarse, (0, 0), max(2.0, (c - a) / 12))
    return out, len(faces)
