"""Planned shelves and the way a real shelf deviates from them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache

import numpy as np

from pipeline.synth.catalog import CATALOG, UNKNOWN_SKU, Sku, random_unknown

DISPLAYS = ("gondola", "endcap")
FIXTURE_WIDTH_CM = {"gondola": 100.0, "endcap": 120.0}
# Endcaps carry promotional mini packs: the same products at 70 % size, so more and smaller.
PACK_SCALE = {"gondola": 1.0, "endcap": 0.7}


@cache
def catalog_for(display: str) -> dict[str, Sku]:
    """The catalog as packed for ``display`` (sizes scaled, looks unchanged)."""
    k = PACK_SCALE[display]
    return {s.sku_id: replace(s, width_cm=s.width_cm * k, height_cm=s.height_cm * k)
            for s in CATALOG}


@dataclass(frozen=True)
class Position:
    """A planned position: one SKU with a number of facings, left to right on its shelf."""

    sku: str
    facings: int
    width_cm: float


@dataclass(frozen=True)
class PlanShelf:
    index: int  # 0 = top shelf
    positions: tuple[Position, ...]


@dataclass(frozen=True)
class Planogram:
    planogram_id: str
    version: int
    display: str
    width_cm: float
    shelves: tuple[PlanShelf, ...]

    @property
    def planned_facings(self) -> int:
        return sum(p.facings for s in self.shelves for p in s.positions)

    def to_json(self) -> dict[str, object]:
        return {
            "planogram_id": self.planogram_id,
            "version": self.version,
            "display": self.display,
            "width_cm": self.width_cm,
            "shelves": [
                {"index": s.index,
                 "positions": [{"sku": p.sku, "facings": p.facings, "width_cm": p.width_cm}
                               for p in s.positions]}
                for s in self.shelves
            ],
        }


@dataclass
class Slot:
    """One product actually standing on a shelf (or a hole where one was planned)."""

    sku: Sku | None  # None: empty space
    width_cm: float
    position: int | None  # index of the planned position whose span it stands in
    status: str  # in_place | misplaced | extra | unknown | gap


@dataclass
class Realisation:
    shelves: list[list[Slot]] = field(default_factory=list)
    deviations: list[dict[str, object]] = field(default_factory=list)


def make_planogram(rng: np.random.Generator, display: str, planogram_id: str) -> Planogram:
    """A plausible planogram: 3..6 shelves, each filled left to right with SKU blocks."""
    width = FIXTURE_WIDTH_CM[display]
    n_shelves = int(rng.integers(3, 7)) if display == "gondola" else int(rng.integers(4, 7))
    skus = list(catalog_for(display).values())
    shelves = []
    for i in range(n_shelves):
        order = rng.permutation(len(skus))
        used, positions = 0.0, []
        for k in order:
            sku = skus[int(k)]
            max_f = 3 if display == "endcap" else 4
            facings = int(rng.integers(1, max_f + 1))
            while facings > 0 and used + facings * sku.width_cm > width * 0.97:
                facings -= 1
            if facings == 0:
                if used > width * 0.8:
                    break
                continue
            positions.append(Position(sku.sku_id, facings, sku.width_cm))
            used += facings * sku.width_cm
        shelves.append(PlanShelf(i, tuple(positions)))
    return Planogram(planogram_id, 1, display, width, tuple(shelves))


def realise(rng: np.random.Generator, plan: Planogram, deviation_rate: float) -> Realisation:
    """What stands on the shelves: the plan with gaps, misplaced, extra and missing facings."""
    out = Realisation()
    plan_skus = {p.sku for s in plan.shelves for p in s.positions}
    catalog = catalog_for(plan.display)
    pack = PACK_SCALE[plan.display]
    for shelf in plan.shelves:
        slots: list[Slot] = []
        for j, pos in enumerate(shelf.positions):
            sku = catalog[pos.sku]
            r = rng.random()
            if r < deviation_rate * 0.30:  # position out of stock: a hole as wide as its block
                slots.append(Slot(None, pos.facings * pos.width_cm, j, "gap"))
                out.deviations.append({"type": "gap", "shelf": shelf.index, "position": j,
                                       "sku": pos.sku, "facings": pos.facings})
                continue
            facings = [Slot(sku, pos.width_cm, j, "in_place") for _ in range(pos.facings)]
            if r < deviation_rate * 0.45 and pos.facings > 1:  # one facing sold, neighbours pushed
                facings.pop()
                out.deviations.append({"type": "missing_facing", "shelf": shelf.index,
                                       "position": j, "sku": pos.sku})
            elif r < deviation_rate * 0.60:
                facings.append(Slot(sku, pos.width_cm, j, "extra"))
                out.deviations.append({"type": "extra_facing", "shelf": shelf.index,
                                       "position": j, "sku": pos.sku})
            elif r < deviation_rate * 0.85:
                k = int(rng.integers(0, len(facings)))
                if rng.random() < 0.6:
                    others = [s for s in catalog.values() if s.sku_id != pos.sku]
                    intruder = others[int(rng.integers(0, len(others)))]
                    facings[k] = Slot(intruder, intruder.width_cm, j, "misplaced")
                    out.deviations.append({"type": "misplaced", "shelf": shelf.index,
                                           "position": j, "sku": intruder.sku_id,
                                           "planned_sku": pos.sku,
                                           "in_planogram": intruder.sku_id in plan_skus})
                else:
                    unk = random_unknown(rng)
                    unk = replace(unk, width_cm=unk.width_cm * pack,
                                  height_cm=unk.height_cm * pack)
                    facings[k] = Slot(unk, unk.width_cm, j, "unknown")
                    out.deviations.append({"type": "unknown", "shelf": shelf.index,
                                           "position": j, "planned_sku": pos.sku})
            slots.extend(facings)
        # Drop from the right end what no longer fits on the board.
        while sum(s.width_cm for s in slots) > plan.width_cm and slots:
            dropped = slots.pop()
            if dropped.sku is not None:
                out.deviations.append({"type": "pushed_off", "shelf": shelf.index,
                                       "position": dropped.position,
                                       "sku": dropped.sku.sku_id})
        out.shelves.append(slots)
    return out


def expected_compliance(plan: Planogram, real: Realisation) -> dict[str, object]:
    """Planned facings found in place / planned facings, per shelf and overall.

    ``out_of_stock_positions``: planned positions with no facing of their SKU (a hole, another
    product, or pushed off the shelf); ``gap_positions``: those that left a visible hole.
    """
    per_shelf = []
    found_total = 0
    for shelf, slots in zip(plan.shelves, real.shelves, strict=True):
        found = 0
        oos = []
        for j, pos in enumerate(shelf.positions):
            n = sum(1 for s in slots if s.position == j and s.sku is not None
                    and s.sku.sku_id == pos.sku)
            found += min(n, pos.facings)
            if n == 0:
                oos.append(j)
        planned = sum(p.facings for p in shelf.positions)
        # Holes that made it onto the board (a hole pushed off a full shelf is not visible).
        gaps = sorted({s.position for s in slots if s.sku is None and s.position is not None})
        per_shelf.append({"index": shelf.index, "planned_facings": planned,
                          "in_place": found, "compliance": found / planned if planned else 1.0,
                          "out_of_stock_positions": oos, "gap_positions": gaps})
        found_total += found
    planned_total = plan.planned_facings
    return {"compliance": found_total / planned_total if planned_total else 1.0,
            "planned_facings": planned_total, "in_place": found_total, "shelves": per_shelf,
            "unknown_label": UNKNOWN_SKU}
