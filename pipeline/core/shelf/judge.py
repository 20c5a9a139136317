"""One shelf read, aligned and judged; a whole bay's compliance report."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from pipeline.core.planogram import Planogram, Shelf
from pipeline.core.shelf.alignment import align_rows
from pipeline.core.shelf.common import DEFAULT_TUNING, Box, Detected, Pair, ShelfTuning
from pipeline.core.shelf.geometry import RowGeometry, Scale, row_geometry
from pipeline.core.shelf.report import (
    ComplianceReport,
    GapReport,
    ItemReport,
    PositionReport,
    ShelfReport,
)
from pipeline.core.shelf.rows import fit_rows, rows_geometry

# ---------------------------------------------------------------------------- one shelf


@dataclass(frozen=True)
class _Hole:
    """An empty stretch of a row, ``x1..x2`` pixels; ``edge`` is left | inner | right."""

    x1: float
    x2: float
    cm: float
    edge: str


@dataclass(frozen=True)
class _Token:
    """One observed element of a row, left to right: a detection or an empty stretch."""

    det: int | None = None
    hole: _Hole | None = None


@dataclass
class _ShelfResult:
    positions: list[PositionReport] = field(default_factory=list)
    items: list[tuple[int, ItemReport]] = field(default_factory=list)
    gaps: list[GapReport] = field(default_factory=list)




def _read_row(*, members: list[int], g: npt.NDArray[np.float64], width_cm: list[float | None],
              geo: RowGeometry, min_cm: float, tuning: ShelfTuning,
              occupied: Sequence[tuple[float, float]] = ()) -> list[_Token]:
    """Detections left to right with the empty stretches between them and at the ends.

    Products are measured from box centres and planned widths: boxes of leaning products
    overlap their neighbours, which would hide small holes.
    """
    sc = geo.scale
    tokens: list[_Token] = []

    def add_hole(x1: float, x2: float, edge: str) -> None:
        # Weak evidence of a product (seen below the detection threshold) splits the stretch:
        # only what is left on either side of it can still be empty shelf.
        for o1, o2 in occupied:
            if x1 < (o1 + o2) / 2 < x2:
                add_hole(x1, o1, edge if edge != "right" else "inner")
                add_hole(o2, x2, edge if edge != "left" else "inner")
                return
        cm = sc.to_cm(x1, x2)
        if cm >= tuning.hole_min * min_cm:
            tokens.append(_Token(hole=_Hole(x1, x2, cm, edge)))

    prev, edge = geo.left, "left"
    for i in members:
        w = width_cm[i]
        half = sc.at(g[i, 0]) * w / 2 if w else g[i, 2] / 2
        add_hole(prev, g[i, 0] - half, edge)
        tokens.append(_Token(det=i))
        prev, edge = max(prev, g[i, 0] + half), "inner"
    add_hole(prev, geo.right, "right" if members else "left")
    return tokens


def _fill_hole(hole: _Hole, want: list[float], scale: Scale) -> list[tuple[float, float, float]]:
    """Centimetres and x span each of the facings standing for ``hole`` gets, left to right.

    Inside the fixture a hole is shared out in proportion to planned widths; at the right end
    the facings are laid from the left and what does not fit gets less (it was pushed off).
    """
    total = sum(want)
    stretch = hole.cm / total if hole.edge != "right" and total <= hole.cm else 1.0
    out, x, room = [], hole.x1, hole.cm
    for w in want:
        got = min(w * stretch, max(room, 0.0))
        nx = min(scale.advance(x, got), hole.x2)
        out.append((got, x, nx))
        x, room = nx, room - got
    return out


# The most planned facings one empty stretch of shelf may stand for: a whole empty shelf of
# small packs is fewer; beyond it the rest of a run reads as unaligned (missing) all the same,
# and the alignment's cost stays linear in the facings a shelf plans.
MAX_HOLE_FACINGS = 128


@dataclass(frozen=True)
class _RowAlignment:
    path: list[Pair]
    found: list[int]  # per planned position: facings found in place
    taken: dict[int, list[int]]  # hole token -> planned facings it stands for


def _align_row(*, tokens: list[_Token], plan: list[int], shelf: Shelf, pos_cm: list[float],
               detections: Sequence[Detected], tuning: ShelfTuning) -> _RowAlignment:
    """Align a row's detections and empty stretches to its planned facings.

    A detection pairs with a facing (match or mismatch); an empty stretch stands for a run
    of facings whose planned widths fit it. Run twice: the second pass knows which positions
    have facings found elsewhere and prefers to leave holes to positions with none.
    """
    positions = shelf.positions
    faced: set[int] = set()

    def pair(i: int, p: int) -> float:
        det = tokens[i].det
        if det is None:
            return -math.inf
        sku = detections[det].sku
        if sku == positions[plan[p]].sku:
            return tuning.match
        beside = {positions[plan[k]].sku for k in (p - 1, p + 1) if 0 <= k < len(plan)}
        return tuning.mismatch - tuning.neighbour if sku in beside else tuning.mismatch

    # Widths and faced facings summed along the plan, so a run of t facings costs O(1).
    cm_upto = [0.0]
    for k in plan:
        cm_upto.append(cm_upto[-1] + pos_cm[k])
    faced_upto: list[int] = []

    def absorb(i: int, p: int, t: int) -> float | None:
        hole = tokens[i].hole
        if hole is None or t > MAX_HOLE_FACINGS or cm_upto[p + t - 1] - cm_upto[p] >= hole.cm:
            return None
        want = cm_upto[p + t] - cm_upto[p]
        misfit = want - hole.cm
        misfit = abs(misfit) if hole.edge != "right" else max(misfit, 0.0)  # slack is normal
        return (tuning.hole_facing * t - tuning.hole_fit * misfit * t / want
                - tuning.faced_up * (faced_upto[p + t] - faced_upto[p]))

    for _ in range(2):
        faced_upto[:] = [0]
        for k in plan:
            faced_upto.append(faced_upto[-1] + (k in faced))
        path = _replace_before_slack(align_rows(len(tokens), len(plan), pair, tuning.gap,
                                                absorb),
                                     tokens=tokens, plan=plan, shelf=shelf,
                                     detections=detections)
        found = [0] * len(positions)
        taken: dict[int, list[int]] = {}
        for i, p in path:
            if i is None or p is None:
                continue
            det = tokens[i].det
            if det is None:
                taken.setdefault(i, []).append(p)
            elif detections[det].sku == positions[plan[p]].sku:
                found[plan[p]] += 1
        faced = {j for j, n in enumerate(found) if n}
        if not (taken and faced):
            break
    return _RowAlignment(path, found, taken)


def _replace_before_slack(path: list[Pair], *, tokens: list[_Token], plan: list[int],
                          shelf: Shelf, detections: Sequence[Detected]) -> list[Pair]:
    """A product left unpaired just before the shelf's right-end slack stands where the first
    facing that slack was given belongs: it replaced that facing, the slack is not a hole
    for it. An extra facing of the position before it is not a replacement."""
    for k in range(1, len(path)):
        (i, p), (d, q) = path[k], path[k - 1]
        hole = None if i is None else tokens[i].hole
        det = None if d is None else tokens[d].det
        if hole is None or hole.edge != "right" or p is None or det is None or q is not None:
            continue
        before = [plan[b] for _, b in path[:k - 1] if b is not None]
        if before and detections[det].sku == shelf.positions[before[-1]].sku:
            continue
        rest = [(i, b) for a, b in path[k + 1:] if a == i]
        return [*path[:k - 1], (d, p), *(rest or [(i, None)]), *path[k + 1 + len(rest):]]
    return path


def _seen(x1: float, x2: float, geo: RowGeometry, image_wh: tuple[int, int] | None
          ) -> tuple[float, float, float]:
    """The part of the stretch of shelf ``x1``-``x2`` (and the product height above it) that
    lies inside the photo: its share of the stretch's area and its ends. All of it without
    the photo's size."""
    if image_wh is None:
        return 1.0, x1, x2
    w, h = image_wh
    a, b = max(x1, 0.0), min(x2, float(w))
    if b <= a or x2 <= x1:
        return 0.0, x1, x1
    low, high = sorted((geo.y(x1), geo.y(x2)))
    top = low - geo.height
    visible_y = max(0.0, min(high, float(h)) - max(top, 0.0)) / max(high - top, 1e-9)
    return (b - a) / (x2 - x1) * visible_y, a, b


def _judge_positions(*, shelf: Shelf, row: _RowAlignment, tokens: list[_Token],
                     plan: list[int], pos_cm: list[float], geo: RowGeometry,
                     tuning: ShelfTuning, image_wh: tuple[int, int] | None = None
                     ) -> tuple[list[PositionReport], list[GapReport]]:
    """Status per planned position; out of stock needs enough empty shelf where it belongs,
    seen in the photo: a stretch the alignment places past its edges (a bay photographed in
    part, a shelf line carried on beyond the frame) is no evidence of a gap."""
    share: dict[int, float] = {}
    spans: dict[int, list[tuple[float, float]]] = {}
    need = [tuning.hole_min * w for w in pos_cm]
    for i, facings in row.taken.items():
        hole = tokens[i].hole
        if hole is None:
            continue
        fills = _fill_hole(hole, [pos_cm[plan[p]] for p in facings], geo.scale)
        for p, (cm, x1, x2) in zip(facings, fills, strict=True):
            j = plan[p]
            seen, a, b = _seen(x1, x2, geo, image_wh)
            if seen <= 0.0:
                continue
            share[j] = share.get(j, 0.0) + cm * seen
            spans.setdefault(j, []).append((a, b))
            if hole.edge == "right":
                need[j] = tuning.edge_hole_min * pos_cm[j]
    positions, gaps = [], []
    for j, pos in enumerate(shelf.positions):
        n = row.found[j]
        box: Box | None = None
        if n >= pos.facings:
            status = "in_place"
        elif n > 0:
            status = "partial"
        elif share.get(j, 0.0) >= need[j]:
            status = "out_of_stock"
            x1 = min(a for a, _ in spans[j])
            x2 = max(b for _, b in spans[j])
            y1, y2 = sorted((geo.y(x1), geo.y(x2)))
            box = (x1, y1 - geo.height, x2, y2)
            if image_wh is not None:
                box = (x1, max(box[1], 0.0), x2, min(y2, float(image_wh[1])))
            gaps.append(GapReport(shelf.index, j, pos.sku, box))
        else:
            status = "missing"
        positions.append(PositionReport(j, pos.sku, pos.facings, n, status, box))
    return positions, gaps


def _evaluate_shelf(*, shelf: Shelf, members: list[int], detections: Sequence[Detected],
                    g: npt.NDArray[np.float64], width_cm: list[float | None], geo: RowGeometry,
                    unknown_label: str, tuning: ShelfTuning,
                    occupied: Sequence[tuple[float, float]] = (),
                    image_wh: tuple[int, int] | None = None) -> _ShelfResult:
    plan = [j for j, p in enumerate(shelf.positions) for _ in range(p.facings)]
    det_cm = [g[i, 2] / geo.scale.at(g[i, 0]) for i in members]
    default_cm = max(float(np.median(det_cm)), 0.5) if det_cm else 10.0
    pos_cm = [p.width_cm or default_cm for p in shelf.positions]
    tokens = _read_row(members=members, g=g, width_cm=width_cm, geo=geo,
                       min_cm=min(pos_cm, default=default_cm), tuning=tuning,
                       occupied=occupied)
    row = _align_row(tokens=tokens, plan=plan, shelf=shelf, pos_cm=pos_cm,
                     detections=detections, tuning=tuning)
    positions, gaps = _judge_positions(shelf=shelf, row=row, tokens=tokens, plan=plan,
                                       pos_cm=pos_cm, geo=geo, tuning=tuning,
                                       image_wh=image_wh)
    items = _classify_items(path=row.path, tokens=tokens, plan=plan, shelf=shelf,
                            detections=detections, unknown_label=unknown_label)
    return _ShelfResult(positions, items, gaps)


def _classify_items(*, path: list[Pair], tokens: list[_Token], plan: list[int], shelf: Shelf,
                    detections: Sequence[Detected], unknown_label: str
                    ) -> list[tuple[int, ItemReport]]:
    """Each detection's status and the planned position it stands in.

    A detection left over beside a block of its own SKU is an ``extra`` facing; one that is
    not where its SKU is planned is ``misplaced`` (``unknown`` when not a catalog product).
    """
    positions = shelf.positions
    paired = [p if i is not None else None for i, p in path]  # what stands beside what
    prev_p: list[int | None] = []
    last: int | None = None
    for p in paired:
        last = p if p is not None else last
        prev_p.append(last)
    next_p: list[int | None] = [None] * len(path)
    nxt: int | None = None
    for k in range(len(path) - 1, -1, -1):
        nxt = paired[k] if paired[k] is not None else nxt
        next_p[k] = nxt
    out = []
    for k, (i, p) in enumerate(path):
        det = None if i is None else tokens[i].det
        if det is None:
            continue
        d = detections[det]
        near = [plan[q] for q in (prev_p[k], next_p[k]) if q is not None]
        j: int | None
        if p is not None:
            j = plan[p]
            ok = d.sku == positions[j].sku
            status = "in_place" if ok else "unknown" if d.sku == unknown_label else "misplaced"
        elif d.sku == unknown_label:
            j, status = (near[0] if near else None), "unknown"
        else:
            same = [q for q in near if positions[q].sku == d.sku]
            j = same[0] if same else near[0] if near else None
            status = "extra" if same else "misplaced"
        out.append((det, ItemReport(d.box, d.sku, d.score, shelf.index, j, status)))
    return out


def split_by_score(detections: Sequence[Detected], min_score: float
                   ) -> tuple[list[Detected], list[Box]]:
    """Detections that count (score >= ``min_score``) and the weaker ones' boxes (evidence)."""
    firm = [d for d in detections if d.score >= min_score]
    weak = [d.box for d in detections if d.score < min_score]
    return firm, weak


def _occupied_by_row(evidence: Sequence[Box], geos: Sequence[RowGeometry | None]
                     ) -> list[list[tuple[float, float]]]:
    """Weak boxes per shelf row: the row whose bottom line passes nearest the box bottom."""
    out: list[list[tuple[float, float]]] = [[] for _ in geos]
    for x1, y1, x2, y2 in evidence:
        cx = (x1 + x2) / 2
        best = min(((abs(y2 - geo.y(cx)), k) for k, geo in enumerate(geos) if geo is not None),
                   default=None)
        if best is not None and best[0] < 0.5 * max(y2 - y1, 1.0):
            out[best[1]].append((x1, x2))
    return out


def evaluate_shelves(*, planogram: Planogram, detections: Sequence[Detected],
                     unknown_label: str = "unknown",
                     brand_of: Callable[[str], str] | None = None,
                     evidence: Sequence[Box] = (),
                     tuning: ShelfTuning = DEFAULT_TUNING,
                     image_wh: tuple[int, int] | None = None) -> ComplianceReport:
    """Shelf-by-shelf compliance of one upright bay photo's detections against its plan.

    ``evidence``: boxes of products seen below the detection threshold. They count for
    nothing, but a stretch of shelf holding one is not reported as an out-of-stock gap.
    ``tuning``: the core's thresholds and alignment scores (production passes
    ``Settings().compliance.tuning``). ``image_wh``: the photo's size; out-of-stock gaps are
    judged on the shelf it shows (without it, wherever the shelf lines run).

    A product found misplaced (or unknown) where the plan puts a SKU it looks nearly as like
    (its ``alternatives``) is named that SKU, and the bay judged once more: the planogram
    tells look-alikes apart where the pixels barely can. One that looks clearly like another
    SKU stays misplaced.
    """
    dets = list(detections)
    result = _evaluate(planogram, dets, unknown_label, evidence, tuning, image_wh)
    shelf_at = {shelf.index: shelf for shelf in planogram.shelves}
    renamed: dict[int, str] = {}
    for i, item in result.items:
        if (item.status in ("misplaced", "unknown") and item.shelf is not None
                and item.position is not None):
            planned = shelf_at[item.shelf].positions[item.position].sku
            if planned in dets[i].alternatives:
                renamed.setdefault(i, planned)
    if renamed:
        dets = [replace(d, sku=renamed[i]) if i in renamed else d for i, d in enumerate(dets)]
        result = _evaluate(planogram, dets, unknown_label, evidence, tuning, image_wh)
        result.items = [(i, replace(item, by_position=True) if i in renamed else item)
                        for i, item in result.items]
    return ComplianceReport(
        planogram_id=planogram.planogram_id, planogram_version=planogram.version,
        shelves=tuple(result.shelves), items=tuple(i for _, i in result.items),
        gaps=tuple(result.gaps), osa=_osa(result.shelves), unknown_label=unknown_label,
        **_share_of_shelf(dets, brand_of or (lambda s: s)))


@dataclass
class _BayResult:
    shelves: list[ShelfReport]
    items: list[tuple[int, ItemReport]]  # (detection, its report), by detection
    gaps: list[GapReport]


def _evaluate(planogram: Planogram, dets: list[Detected], unknown_label: str,
              evidence: Sequence[Box], tuning: ShelfTuning,
              image_wh: tuple[int, int] | None) -> _BayResult:
    shelves = planogram.shelves
    rows = fit_rows(dets, len(shelves), planogram, tuning=tuning)
    widths = planogram.sku_widths()
    width_cm = [widths.get(d.sku) for d in dets]
    g = rows_geometry(dets)
    geos = (row_geometry(rows=rows, g=g, width_cm=width_cm, fixture_cm=planogram.width_cm,
                         tuning=tuning)
            if dets else [None] * len(shelves))
    occupied = _occupied_by_row(evidence, geos)
    out = _BayResult([], [], [])
    for shelf, members, geo, occ in zip(shelves, rows.members, geos, occupied, strict=True):
        if geo is None:  # nothing seen: no shelf to measure holes on, so nothing is a gap
            res = _ShelfResult([PositionReport(j, p.sku, p.facings, 0, "missing")
                                for j, p in enumerate(shelf.positions)])
        else:
            res = _evaluate_shelf(shelf=shelf, members=members, detections=dets, g=g,
                                  width_cm=width_cm, geo=geo, unknown_label=unknown_label,
                                  tuning=tuning, occupied=occ, image_wh=image_wh)
        out.shelves.append(ShelfReport(shelf.index, shelf.planned_facings,
                                       sum(p.found_facings for p in res.positions),
                                       len(members), tuple(res.positions)))
        out.items.extend(res.items)
        out.gaps.extend(res.gaps)
    placed = {i for m in rows.members for i in m}
    out.items.extend((i, ItemReport(d.box, d.sku, d.score, None, None, "off_shelf"))
                     for i, d in enumerate(dets) if i not in placed)
    out.items.sort(key=lambda t: t[0])
    return out


def _osa(shelves: Sequence[ShelfReport]) -> dict[str, float]:
    """Per planned SKU: share of its planned positions with at least one facing found."""
    seen: Counter[str] = Counter()
    hit: Counter[str] = Counter()
    for s in shelves:
        for p in s.positions:
            seen[p.sku] += 1
            hit[p.sku] += int(p.found_facings > 0)
    return {k: hit[k] / n for k, n in seen.items()}


def _share_of_shelf(dets: Sequence[Detected], brand_of: Callable[[str], str]
                    ) -> dict[str, dict[str, float]]:
    count: Counter[str] = Counter()
    width: dict[str, float] = {}
    for d in dets:
        b = brand_of(d.sku)
        count[b] += 1
        width[b] = width.get(b, 0.0) + max(d.box[2] - d.box[0], 0.0)
    n, w = sum(count.values()), sum(width.values())
    return {"share_of_shelf": {k: v / n for k, v in count.items()} if n else {},
            "share_of_shelf_width": {k: v / w for k, v in width.items()} if w else {}}
