"""Report dataclasses of the compliance core; ``to_json`` gives plain JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pipeline.core.shelf.common import Box

# ---------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class PositionReport:
    """A planned position and what was found for it."""

    index: int
    sku: str
    planned_facings: int
    found_facings: int
    status: str  # in_place | partial | out_of_stock | missing
    gap_box: Box | None = None

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "sku": self.sku, "planned_facings": self.planned_facings,
                "found_facings": self.found_facings, "status": self.status,
                "gap_box": None if self.gap_box is None else _round_box(self.gap_box)}


@dataclass(frozen=True)
class ItemReport:
    """A detection with the shelf and planned position it stands in, and its status."""

    box: Box
    sku: str
    score: float
    shelf: int | None  # None: on no shelf row (off_shelf)
    position: int | None
    status: str  # in_place | extra | misplaced | unknown | off_shelf
    # Named by where the plan puts it: recognition found it nearly as like this SKU as the
    # one it scored best (see ``evaluate_shelves``).
    by_position: bool = False

    def to_json(self) -> dict[str, object]:
        return {"box": _round_box(self.box), "sku": self.sku, "score": round(self.score, 4),
                "shelf": self.shelf, "position": self.position, "status": self.status,
                "by_position": self.by_position}


@dataclass(frozen=True)
class GapReport:
    """An out-of-stock position and the empty stretch of shelf where it belongs."""

    shelf: int
    position: int
    sku: str
    box: Box

    def to_json(self) -> dict[str, object]:
        return {"shelf": self.shelf, "position": self.position, "sku": self.sku,
                "box": _round_box(self.box)}


@dataclass(frozen=True)
class ShelfReport:
    """One shelf: planned facings, those found in place, and every planned position."""

    index: int
    planned_facings: int
    found_facings: int  # planned facings found in place (extras not counted)
    detections: int
    positions: tuple[PositionReport, ...]

    @property
    def compliance(self) -> float:
        return self.found_facings / self.planned_facings if self.planned_facings else 1.0

    @property
    def out_of_stock_positions(self) -> list[int]:
        return [p.index for p in self.positions if p.status == "out_of_stock"]

    @property
    def not_found_positions(self) -> list[int]:
        """Positions with no facing found, whether a hole or another product stands there."""
        return [p.index for p in self.positions if p.found_facings == 0]

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "planned_facings": self.planned_facings,
                "found_facings": self.found_facings,
                "compliance": round(self.compliance, 4), "detections": self.detections,
                "out_of_stock": [p.sku for p in self.positions if p.status == "out_of_stock"],
                "out_of_stock_positions": self.out_of_stock_positions,
                "not_found_positions": self.not_found_positions,
                "positions": [p.to_json() for p in self.positions]}


@dataclass(frozen=True)
class ComplianceReport:
    """Everything a bay's photo says against its planogram; ``to_json`` is plain JSON."""

    planogram_id: str
    planogram_version: int
    shelves: tuple[ShelfReport, ...]
    items: tuple[ItemReport, ...]
    gaps: tuple[GapReport, ...]
    osa: dict[str, float]  # per planned SKU: share of its positions with a facing found
    share_of_shelf: dict[str, float]  # per brand: share of detected facings
    share_of_shelf_width: dict[str, float]  # per brand: share of detected box width
    unknown_label: str = "unknown"

    @property
    def planned_facings(self) -> int:
        return sum(s.planned_facings for s in self.shelves)

    @property
    def found_facings(self) -> int:
        return sum(s.found_facings for s in self.shelves)

    @property
    def compliance(self) -> float:
        total = self.planned_facings
        return self.found_facings / total if total else 1.0

    def to_json(self) -> dict[str, object]:
        status = Counter(i.status for i in self.items)
        return {
            "planogram": {"id": self.planogram_id, "version": self.planogram_version},
            "compliance": round(self.compliance, 4),
            "planned_facings": self.planned_facings,
            "found_facings": self.found_facings,
            "out_of_stock": sorted({g.sku for g in self.gaps}),
            "misplaced": status.get("misplaced", 0),
            "unknown_products": status.get("unknown", 0),
            "extra_facings": status.get("extra", 0),
            "unknown_label": self.unknown_label,
            "shelves": [s.to_json() for s in self.shelves],
            "items": [i.to_json() for i in self.items],
            "gaps": [g.to_json() for g in self.gaps],
            "osa": {k: round(v, 4) for k, v in sorted(self.osa.items())},
            "share_of_shelf": {k: round(v, 4) for k, v in sorted(self.share_of_shelf.items())},
            "share_of_shelf_width": {k: round(v, 4)
                                     for k, v in sorted(self.share_of_shelf_width.items())},
        }


def _round_box(box: Box) -> list[float]:
    return [round(v, 1) for v in box]
