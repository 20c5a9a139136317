"""Shared types, tuning constants and the detection record of the shelf compliance core."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.core.planogram import Position

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 pixels, upright image
Pair = tuple[int | None, int | None]  # (observed index, planned index); None = gap

MAX_ROW_SLOPE = 0.35  # |dy/dx| of a shelf edge beyond which a pairing is not a row neighbour
MAX_EDGE_SLOPE = 0.12  # |dx/dy| of a fixture's upright edge in an upright photo
CLEARANCE_CM = 7.0  # shelf height above its tallest product: board and headroom
ROW_SPLIT = 0.4  # rows split where bottoms jump by more than this x the median box height
HOLE_MIN = 0.6  # an empty stretch counts when wider than this x the narrowest planned facing,
# and a position is out of stock when its share of one is this x one of its facings
EDGE_HOLE_MIN = 0.9  # ... at the right end, where a full shelf pushes products off instead
EDGE_TOL_CM = 1.2  # first products stand this close to the fixture's left edge
MATCH, MISMATCH, GAP = 2.0, -1.0, -1.0
HOLE_FACING = -0.5  # per planned facing an empty stretch stands for: better than a gap
HOLE_FIT = 1.0  # per facing width by which the stretch and the facings it stands for differ
FACED_UP = 0.5  # per facing of a position found elsewhere: sold facings get faced up, so an
# empty stretch is rather where nothing of a position stands
NEIGHBOUR = 1.2  # a product of the next block over standing against a facing is rather an
# extra facing of its own block than a replacement


@dataclass(frozen=True)
class Detected:
    """One detected product: upright-image box in pixels, catalog SKU (or unknown), score."""

    box: Box
    sku: str
    score: float


def _facing_skus(positions: Sequence[Position]) -> list[str]:
    return [p.sku for p in positions for _ in range(p.facings)]
