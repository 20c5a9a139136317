"""Shared types, the tuning and the detection record of the shelf compliance core."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

from pipeline.core.planogram import Position

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 pixels, upright image
Pair = tuple[int | None, int | None]  # (observed index, planned index); None = gap


@dataclass(frozen=True)
class ShelfTuning:
    """The tunables of the shelf compliance core; defaults are the calibrated values.

    Lengths in ``_cm`` fields are centimetres of shelf; ``match`` to ``neighbour`` are
    alignment scores (per pairing, gap, or planned facing an empty stretch stands for).
    Production reads them from ``Settings().compliance.tuning``
    (``SHELF_COMPLIANCE__TUNING__<FIELD>``).
    """

    max_row_slope: float = 0.35  # |dy/dx| of a shelf edge beyond which a pairing is not a
    # row neighbour
    max_edge_slope: float = 0.12  # |dx/dy| of a fixture's upright edge in an upright photo
    clearance_cm: float = 7.0  # shelf height above its tallest product: board and headroom
    row_split: float = 0.4  # rows split where bottoms jump by more than this x the median
    # box height
    hole_min: float = 0.6  # an empty stretch counts when wider than this x the narrowest
    # planned facing, and a position is out of stock when its share of one is this x one of
    # its facings
    edge_hole_min: float = 0.9  # ... at the right end, where a full shelf pushes products off
    # instead
    edge_tol_cm: float = 1.2  # first products stand this close to the fixture's left edge
    match: float = 2.0  # a detection paired with a facing of its SKU
    mismatch: float = -1.0  # ... with a facing of another SKU: better than two gaps
    gap: float = -1.0  # per observed or planned element left unpaired
    hole_facing: float = -0.5  # per planned facing an empty stretch stands for: better than a
    # gap
    hole_fit: float = 1.0  # per facing width by which the stretch and the facings it stands
    # for differ
    faced_up: float = 0.5  # per facing of a position found elsewhere: sold facings get faced
    # up, so an empty stretch is rather where nothing of a position stands
    neighbour: float = 1.2  # a product of the next block over standing against a facing is
    # rather an extra facing of its own block than a replacement

    def __post_init__(self) -> None:
        problems = [f"{f.name} must be a finite number, got {getattr(self, f.name)!r}"
                    for f in fields(self) if not _finite(getattr(self, f.name))]
        if problems:
            raise ValueError("invalid shelf tuning: " + "; ".join(problems))
        rules = [
            ("max_row_slope", self.max_row_slope >= 0, ">= 0"),
            ("max_edge_slope", self.max_edge_slope >= 0, ">= 0"),
            ("clearance_cm", self.clearance_cm >= 0, ">= 0"),
            ("row_split", self.row_split > 0, "> 0"),
            ("hole_min", self.hole_min > 0, "> 0"),
            ("edge_hole_min", self.edge_hole_min > 0, "> 0"),
            ("edge_tol_cm", self.edge_tol_cm > 0, "> 0"),
            ("match", self.match > 0, "> 0"),
            ("mismatch", self.mismatch < self.match, "< match"),
            ("gap", self.gap <= 0, "<= 0"),
            ("hole_fit", self.hole_fit >= 0, ">= 0"),
            ("faced_up", self.faced_up >= 0, ">= 0"),
            ("neighbour", self.neighbour >= 0, ">= 0"),
        ]
        problems = [f"{name} must be {rule}, got {getattr(self, name)!r}"
                    for name, ok, rule in rules if not ok]
        if problems:
            raise ValueError("invalid shelf tuning: " + "; ".join(problems))


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


DEFAULT_TUNING = ShelfTuning()


@dataclass(frozen=True)
class Detected:
    """One detected product: upright-image box in pixels, catalog SKU (or unknown), score,
    and the SKUs it looks nearly as like (``recognition.nearly_as_like``)."""

    box: Box
    sku: str
    score: float
    alternatives: frozenset[str] = frozenset()


def _facing_skus(positions: Sequence[Position]) -> list[str]:
    return [p.sku for p in positions for _ in range(p.facings)]
