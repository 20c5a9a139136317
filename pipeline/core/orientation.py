"""EXIF Orientation (tag 0x0112) applied to pixels and boxes.

Orientation ``o`` says how the stored pixels must be transformed to be displayed upright:
1 identity, 2 mirror horizontal, 3 rotate 180, 4 mirror vertical, 5 transpose,
6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ORIENTATIONS = (1, 2, 3, 4, 5, 6, 7, 8)
_INVERSE = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}


def check_orientation(orientation: int) -> int:
    """Return ``orientation`` if it is a valid EXIF value, else raise ``ValueError``."""
    if orientation not in _INVERSE:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation}")
    return orientation


def invert_orientation(orientation: int) -> int:
    """The orientation whose transform undoes ``orientation``'s transform."""
    return _INVERSE[check_orientation(orientation)]


def apply_orientation(image: npt.NDArray[np.uint8], orientation: int
                      ) -> npt.NDArray[np.uint8]:
    """Transform stored pixels ``(H, W, ...)`` to the upright view ``orientation`` describes."""
    o = check_orientation(orientation)
    if o == 1:
        out = image
    elif o == 2:
        out = image[:, ::-1]
    elif o == 3:
        out = image[::-1, ::-1]
    elif o == 4:
        out = image[::-1, :]
    elif o == 5:
        out = np.swapaxes(image, 0, 1)
    elif o == 6:
        out = np.rot90(image, k=-1)
    elif o == 7:
        out = np.swapaxes(image, 0, 1)[::-1, ::-1]
    else:
        out = np.rot90(image, k=1)
    return np.ascontiguousarray(out)


def oriented_size(size_wh: tuple[int, int], orientation: int) -> tuple[int, int]:
    """Width and height after applying ``orientation`` to an image of ``size_wh``."""
    w, h = size_wh
    return (h, w) if check_orientation(orientation) >= 5 else (w, h)


def orient_boxes(
    xyxy: npt.NDArray[np.floating], size_wh: tuple[int, int], orientation: int
) -> npt.NDArray[np.float64]:
    """Map boxes ``(N, 4)`` from stored pixels of ``size_wh`` to the upright view.

    Coordinates are continuous pixel edges (a box covering pixel 0 is ``[0, 1)``).
    """
    o = check_orientation(orientation)
    w, h = size_wh
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    if o == 1:
        cols = (x1, y1, x2, y2)
    elif o == 2:
        cols = (w - x2, y1, w - x1, y2)
    elif o == 3:
        cols = (w - x2, h - y2, w - x1, h - y1)
    elif o == 4:
        cols = (x1, h - y2, x2, h - y1)
    elif o == 5:
        cols = (y1, x1, y2, x2)
    elif o == 6:
        cols = (h - y2, x1, h - y1, x2)
    elif o == 7:
        cols = (h - y2, w - x2, h - y1, w - x1)
    else:
        cols = (y1, w - x2, y2, w - x1)
    return np.stack(cols, axis=1)
