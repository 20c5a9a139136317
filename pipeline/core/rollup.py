"""Shelf, aisle and store rollups of per-photo compliance results (pure)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pipeline.core.result import PhotoResult

LEVELS = ("shelf", "aisle", "store")
Row = dict[str, Any]
_NEVER = datetime.min.replace(tzinfo=UTC)


def _instant(text: str | None) -> datetime:
    """An ISO time as an instant, compared as such: ``+02:00`` and ``Z`` spellings, or a
    fraction of a second, would order wrongly as text. Naive is UTC; none or unreadable is
    before everything."""
    if not text:
        return _NEVER
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return _NEVER
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def latest_per_bay(results: Iterable[PhotoResult]) -> list[PhotoResult]:
    """One result per (store, aisle, bay, date): the latest photo of the day with a
    compliance figure wins, so a re-shot bay (or the same photo uploaded twice) replaces its
    earlier photo instead of counting twice. Latest by when it was taken (EXIF) when every
    photo of the bay's day says so, else by when each was uploaded: a phone that syncs the
    day's photos at once uploads them in any order, and an EXIF time is the camera's local
    time, not comparable with an upload's UTC."""
    days: dict[tuple[str, str, str, str], list[PhotoResult]] = {}
    for r in results:
        days.setdefault((r.store, r.aisle, r.bay, str(r.date)), []).append(r)
    best = []
    for key in sorted(days):
        photos = days[key]
        taken = all(r.taken_at for r in photos)
        best.append(max(photos, key=lambda r: (
            r.compliance is not None, _instant(r.taken_at if taken else r.captured_at),
            r.sha256, r.upload_id)))
    return best


def _ratio(found: int, planned: int) -> float | None:
    return round(found / planned, 6) if planned else None


def shelf_rows(results: Iterable[PhotoResult]) -> list[Row]:
    rows = []
    for r in latest_per_bay(results):
        for s in r.shelves:
            rows.append({"date": r.date, "store": r.store, "aisle": r.aisle, "bay": r.bay,
                         "shelf": s.index, "photo": r.sha256,
                         "planned_facings": s.planned_facings, "found_facings": s.found_facings,
                         "compliance": _ratio(s.found_facings, s.planned_facings),
                         "out_of_stock": len(s.out_of_stock),
                         "out_of_stock_skus": sorted(s.out_of_stock)})
    return sorted(rows, key=lambda x: (x["store"], x["aisle"], x["bay"], x["shelf"]))


def _group(rows: list[Row], keys: tuple[str, ...]) -> list[Row]:
    acc: dict[tuple[Any, ...], Row] = defaultdict(lambda: {
        "planned_facings": 0, "found_facings": 0, "out_of_stock": 0, "bays": set(),
        "shelves": 0})
    for row in rows:
        g = acc[tuple(row[k] for k in keys)]
        g["planned_facings"] += row["planned_facings"]
        g["found_facings"] += row["found_facings"]
        g["out_of_stock"] += row["out_of_stock"]
        g["bays"].add((row["store"], row["aisle"], row["bay"]))
        g["shelves"] += 1
    out = []
    for k in sorted(acc):
        g = acc[k]
        out.append({**dict(zip(keys, k, strict=True)), "bays": len(g["bays"]),
                    "shelves": g["shelves"], "planned_facings": g["planned_facings"],
                    "found_facings": g["found_facings"],
                    "compliance": _ratio(g["found_facings"], g["planned_facings"]),
                    "out_of_stock": g["out_of_stock"]})
    return out


def rollups(results: Iterable[PhotoResult]) -> dict[str, list[Row]]:
    """Rows per level; compliance is found / planned facings summed over the level."""
    shelves = shelf_rows(results)
    return {"shelf": shelves,
            "aisle": _group(shelves, ("date", "store", "aisle")),
            "store": _group(shelves, ("date", "store"))}
