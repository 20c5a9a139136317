"""Planogram compliance from detections (count-based: planned facings found / planned facings)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any


def facing_counts(skus: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(skus).items()))


def planned_facings(planogram: Mapping[str, Any]) -> dict[str, int]:
    """Facings per SKU summed over the planogram's shelves and positions."""
    out: Counter[str] = Counter()
    for shelf in planogram.get("shelves", []):
        for pos in shelf.get("positions", []):
            out[str(pos["sku"])] += int(pos.get("facings", 1))
    return dict(sorted(out.items()))


def count_compliance(*, planogram: Mapping[str, Any] | None, detected: Iterable[str],
                     unknown_label: str = "unknown") -> dict[str, Any]:
    """Per-SKU found/planned facings, out-of-stock and unexpected SKUs, compliance in [0, 1]."""
    seen = facing_counts(detected)
    if planogram is None:
        return {"compliance": None, "facings": seen, "planogram": None}
    plan = planned_facings(planogram)
    found = {sku: min(seen.get(sku, 0), n) for sku, n in plan.items()}
    total = sum(plan.values())
    return {
        "compliance": round(sum(found.values()) / total, 4) if total else None,
        "planned_facings": total,
        "found_facings": sum(found.values()),
        "facings": seen,
        "per_sku": {sku: {"planned": n, "found": seen.get(sku, 0)} for sku, n in plan.items()},
        "out_of_stock": [sku for sku, n in plan.items() if seen.get(sku, 0) == 0],
        "unexpected": sorted(s for s in seen if s not in plan and s != unknown_label),
        "unknown_products": seen.get(unknown_label, 0),
        "planogram": {"id": planogram.get("planogram_id"), "version": planogram.get("version")},
    }
