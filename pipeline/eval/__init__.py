"""Evaluation harnesses: measured on data, never used by the running pipeline."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pipeline.image import PreparedPhoto, prepare_photo


def read_prepared(path: Path, tool: str, *, long_side: int, jpeg_quality: int,
                  orientation: int | None = None) -> PreparedPhoto | None:
    """``path`` as the detect stage receives it (see ``prepare_photo``), or None, named on
    stderr, for a photo that does not decode: an evaluation leaves it out and counts it
    rather than ending."""
    try:
        return prepare_photo(path.read_bytes(), long_side=long_side, jpeg_quality=jpeg_quality,
                             orientation=orientation)
    except (OSError, ValueError) as exc:
        print(f"{tool}: {path}: left out, {exc}", file=sys.stderr)
        return None


def read_photo(path: Path, tool: str, *, long_side: int, jpeg_quality: int,
               orientation: int | None = None, normalize: bool = True
               ) -> tuple[npt.NDArray[np.uint8], float] | None:
    """What a detector is fed of ``path`` and its scale (see ``read_prepared``)."""
    p = read_prepared(path, tool, long_side=long_side, jpeg_quality=jpeg_quality,
                      orientation=orientation)
    return None if p is None else (p.seen(normalize), p.scale)
