"""Shelf-aware planogram compliance: detections -> shelf rows -> aligned planned facings.

Pure: boxes and a validated planogram in, report dataclasses out. Detections are grouped
into shelf rows (tilted by perspective, some shelves possibly empty); each row is read left
to right, with the empty stretches of board between products measured in centimetres (px/cm
and the fixture's edges are estimated from the boxes and the plan's widths), and aligned to
its shelf's planned facings by Needleman-Wunsch, where an empty stretch may stand for the
facings that fit it. A planned facing paired with a detection of its SKU is found in place;
a position with nothing found is ``out_of_stock`` when enough empty board is where it
belongs and ``missing`` otherwise (replaced, or pushed off a full shelf). Compliance is
planned facings found in place / planned facings, as in ``pipeline.synth.planogram``.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipeline.core.planogram import Planogram, Position, Shelf

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


def align_sequences(*, observed: Sequence[str], planned: Sequence[str], match: float = MATCH,
                    mismatch: float = MISMATCH, gap: float = GAP) -> list[Pair]:
    """Needleman-Wunsch global alignment of two label sequences, as index pairs in order.

    Defaults prefer a substitution (-1) to a deletion plus an insertion (-2).
    """
    return _align(len(observed), len(planned),
                  lambda i, j: match if observed[i] == planned[j] else mismatch, gap)


def _align(n: int, m: int, pair: Callable[[int, int], float], gap: float,
           absorb: Callable[[int, int, int], float | None] | None = None) -> list[Pair]:
    """Global alignment maximising summed ``pair(i, j)`` scores, ``gap`` per unaligned element.

    ``absorb(i, j, t)`` scores observed ``i`` standing for the ``t`` planned elements from
    ``j`` (an empty stretch of shelf where several facings belong), None once ``t`` is too
    many; such an ``i`` appears once per planned element in the result. Ties leave the last
    elements of a run unpaired (an extra facing stands at the end of its block).
    """
    H = [[-math.inf] * (m + 1) for _ in range(n + 1)]
    move = [[0] * (m + 1) for _ in range(n + 1)]  # 1 pair, 2 skip i, 3 skip j, 3+t absorb t
    H[0][0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 and j == 0:
                continue
            cands = []
            if i:
                cands.append((H[i - 1][j] + gap, 2))
            if j:
                cands.append((H[i][j - 1] + gap, 3))
            if i and j:
                cands.append((H[i - 1][j - 1] + pair(i - 1, j - 1), 1))
            for t in range(1, j + 1):
                s = absorb(i - 1, j - t, t) if absorb is not None and i else None
                if s is None:
                    break
                cands.append((H[i - 1][j - t] + s, 3 + t))
            best = cands[0]
            for c in cands[1:]:
                if c[0] > best[0] + 1e-9:
                    best = c
            H[i][j], move[i][j] = best
    out: list[Pair] = []
    i, j = n, m
    while i > 0 or j > 0:
        mv = move[i][j]
        if mv == 1:
            i, j = i - 1, j - 1
            out.append((i, j))
        elif mv == 2:
            i -= 1
            out.append((i, None))
        elif mv == 3:
            j -= 1
            out.append((None, j))
        else:
            i, j = i - 1, j - (mv - 3)
            out.extend((i, k) for k in range(j + mv - 4, j - 1, -1))
    return out[::-1]


# ---------------------------------------------------------------------------- shelf rows


@dataclass(frozen=True)
class _Rows:
    """Members per shelf (left to right) and each shelf's bottom line ``y = a + b * x``."""

    members: list[list[int]]
    lines: list[tuple[float, float]]


def _geometry(detections: Sequence[Detected]) -> npt.NDArray[np.float64]:
    """``(N, 4)`` columns: x centre, bottom y, width, height."""
    b = np.array([d.box for d in detections], np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, b[:, 3], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)


def _neighbour_slope(g: npt.NDArray[np.float64]) -> float:
    """Median bottom-edge slope between each box and its nearest right-hand row neighbour."""
    slopes = []
    for i in range(len(g)):
        dx = g[:, 0] - g[i, 0]
        dy = g[:, 1] - g[i, 1]
        ok = ((dx > 0) & (dx < 2 * np.maximum(g[:, 2], g[i, 2]))
              & (np.abs(dy) < 0.25 * np.minimum(g[:, 3], g[i, 3]) + MAX_ROW_SLOPE * dx))
        if ok.any():
            j = int(np.flatnonzero(ok)[np.argmin(dx[ok])])
            slopes.append(dy[j] / dx[j])
    return float(np.median(slopes)) if slopes else 0.0


def _fit_line(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], prior: float,
              stiffness: float) -> tuple[float, float]:
    """Least-squares ``y = a + b x`` with ``b`` pulled towards ``prior`` (short rows)."""
    xm, ym = float(x.mean()), float(y.mean())
    sxx = float(((x - xm) ** 2).sum())
    sxy = float(((x - xm) * (y - ym)).sum())
    b = (sxy + stiffness * prior) / (sxx + stiffness)
    return ym - b * xm, b


def _split_rows(g: npt.NDArray[np.float64], n_shelves: int
                ) -> tuple[list[list[int]], list[tuple[float, float]]]:
    """Rows by iterated line fits, seeded by splitting de-tilted bottoms at their big jumps.

    Returns members per row (left to right) and row lines, top row first.
    """
    slope = _neighbour_slope(g)
    r = g[:, 1] - slope * g[:, 0]
    order = np.argsort(r)
    jumps = np.diff(r[order])
    height = float(np.median(g[:, 3]))
    cuts = [int(k) for k in np.argsort(-jumps)[:max(n_shelves - 1, 0)]
            if jumps[k] > ROW_SPLIT * height]
    labels = np.zeros(len(g), np.int64)
    for k in cuts:
        labels[order[k + 1:]] += 1
    stiffness = 4.0 * max(float(np.median(g[:, 2])), 1.0) ** 2
    for _ in range(20):
        groups = [np.flatnonzero(labels == k) for k in np.unique(labels)]
        lines = [_fit_line(g[m, 0], g[m, 1], slope, stiffness) for m in groups]
        dist = np.stack([np.abs(g[:, 1] - (a + b * g[:, 0])) for a, b in lines], 1)
        new = np.argmin(dist, 1)
        if np.array_equal(new, labels):
            break
        labels = new
    xm = float(np.median(g[:, 0]))
    groups = sorted((np.flatnonzero(labels == k) for k in np.unique(labels)),
                    key=lambda m: float(np.median(g[m, 1] - slope * (g[m, 0] - xm))))
    merged = [groups[0]]
    for m in groups[1:]:  # a row seen in pieces (fanned-out perspective, a hole) is one row
        both = np.concatenate([merged[-1], m])
        a, b = _fit_line(g[both, 0], g[both, 1], slope, stiffness)
        if np.abs(g[both, 1] - (a + b * g[both, 0])).max() < ROW_SPLIT / 2 * height:
            merged[-1] = both
        else:
            merged.append(m)
    lines = [_fit_line(g[m, 0], g[m, 1], slope, stiffness) for m in merged]
    ranked = sorted(range(len(merged)), key=lambda k: lines[k][0] + lines[k][1] * xm)
    return ([sorted(merged[k].tolist(), key=lambda i: float(g[i, 0])) for k in ranked],
            [lines[k] for k in ranked])


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence: how much of a plan a row reads like."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _map_rows(rows: list[list[int]], lines: list[tuple[float, float]],
              g: npt.NDArray[np.float64], n_shelves: int, labels: Sequence[str],
              planogram: Planogram | None) -> list[int]:
    """Shelf index per observed row when some shelves are empty.

    Maximises how well each row reads like its shelf's plan (longest common subsequence, in
    facings) less a penalty, in units of one facing per shelf height, for vertical spacing
    that disagrees with the number of shelves skipped between consecutive rows. A shelf is
    about as high as its tallest product plus a clearance (board and headroom).
    """
    n_rows = len(rows)
    xm = float(np.median(g[:, 0]))
    y = [a + b * xm for a, b in lines]
    tall = [float(np.percentile(g[m, 3], 90)) for m in rows]
    d = [y[r] - y[r - 1] for r in range(1, n_rows)]
    widths = {} if planogram is None else planogram.sku_widths()
    px_cm = [g[i, 2] / widths[sku] for i, sku in enumerate(labels) if sku in widths]
    clear = (CLEARANCE_CM * float(np.median(px_cm)) if px_cm
             else CLEARANCE_CM / 20 * float(np.median(tall)))
    unit = float(np.median(tall)) + clear
    planned = None if planogram is None else [_facing_skus(sh.positions)
                                              for sh in planogram.shelves]

    def sim(r: int, s: int) -> float:
        if planned is None:
            return 0.0
        return float(_lcs([labels[i] for i in rows[r]], planned[s]))

    def spacing(r: int, skipped: int) -> float:
        return 1.5 * abs(d[r - 1] - (tall[r] + clear + skipped * unit)) / max(unit, 1e-6)

    NEG = -1e18
    best = [[NEG] * n_shelves for _ in range(n_rows)]
    back = [[-1] * n_shelves for _ in range(n_rows)]
    for s in range(n_shelves - n_rows + 1):
        best[0][s] = sim(0, s) - 1e-6 * s  # no evidence at all: empty shelves at the bottom
    for r in range(1, n_rows):
        for s in range(r, n_shelves - n_rows + r + 1):
            for p in range(r - 1, s):
                v = best[r - 1][p] - spacing(r, s - p - 1)
                if v > best[r][s]:
                    best[r][s], back[r][s] = v, p
            best[r][s] += sim(r, s)
    s = int(np.argmax(best[-1]))
    out = [s]
    for r in range(n_rows - 1, 0, -1):
        s = back[r][s]
        out.append(s)
    return out[::-1]


def _on_some_row(g: npt.NDArray[np.float64], n_shelves: int) -> npt.NDArray[np.intp]:
    """Indices of detections that stand in a shelf row.

    Bottoms (de-tilted) are grouped at their big jumps. When there are more groups than
    shelves, the smallest groups (a few false boxes on a header banner or the floor) are left
    out until the count fits, as long as each is far smaller than a typical row; otherwise a
    spurious group would take a row of its own and shift every shelf below it.
    """
    n = len(g)
    if n < 2 * max(n_shelves, 1):
        return np.arange(n)
    r = g[:, 1] - _neighbour_slope(g) * g[:, 0]
    order = np.argsort(r)
    height = float(np.median(g[:, 3]))
    breaks = np.flatnonzero(np.diff(r[order]) > ROW_SPLIT * height) + 1
    groups = [list(part) for part in np.split(order, breaks)]
    typical = float(np.median([len(x) for x in groups]))
    dropped: set[int] = set()
    for k in sorted(range(len(groups)), key=lambda k: len(groups[k])):
        if len(groups) - len(dropped) <= n_shelves or len(groups[k]) > 0.3 * typical:
            break
        dropped.add(k)
    keep = np.array(sorted(int(i) for k, grp in enumerate(groups) if k not in dropped
                           for i in grp), np.intp)
    return keep if len(keep) >= n_shelves else np.arange(n)


def _fit_rows(detections: Sequence[Detected], n_shelves: int,
              planogram: Planogram | None) -> _Rows:
    if n_shelves <= 0:
        return _Rows([], [])
    if not detections:
        return _Rows([[] for _ in range(n_shelves)], [(0.0, 0.0)] * n_shelves)
    g_all = _geometry(detections)
    keep = _on_some_row(g_all, n_shelves)
    g = g_all[keep]
    rows, lines = _split_rows(g, n_shelves)
    rows = [[int(keep[i]) for i in row] for row in rows]
    shelf_of = (list(range(len(rows))) if len(rows) == n_shelves
                else _map_rows(rows, lines, g_all, n_shelves, [d.sku for d in detections],
                               planogram))
    members: list[list[int]] = [[] for _ in range(n_shelves)]
    known: dict[int, tuple[float, float]] = {}
    for row, line, s in zip(rows, lines, shelf_of, strict=True):
        members[s] = row
        known[s] = line
    return _Rows(members, _fill_lines(known, n_shelves, g))


def _fill_lines(known: dict[int, tuple[float, float]], n_shelves: int,
                g: npt.NDArray[np.float64]) -> list[tuple[float, float]]:
    """Lines for empty shelves: interpolated between neighbours, extrapolated at the ends."""
    idx = sorted(known)
    xm = float(np.median(g[:, 0]))
    if len(idx) >= 2:
        steps = [(known[b][0] + known[b][1] * xm - known[a][0] - known[a][1] * xm) / (b - a)
                 for a, b in itertools.pairwise(idx)]
        unit = float(np.median(steps))
    else:
        unit = 2.0 * float(np.median(g[:, 3]))
    out = []
    for s in range(n_shelves):
        above = [k for k in idx if k <= s]
        below = [k for k in idx if k >= s]
        if above and below:
            a, b = above[-1], below[0]
            t = 0.0 if a == b else (s - a) / (b - a)
            out.append((known[a][0] * (1 - t) + known[b][0] * t,
                        known[a][1] * (1 - t) + known[b][1] * t))
        else:
            k = above[-1] if above else below[0]
            out.append((known[k][0] + (s - k) * unit, known[k][1]))
    return out


def assign_rows(*, detections: Sequence[Detected], n_shelves: int,
                planogram: Planogram | None = None) -> list[list[int]]:
    """Detection indices per shelf, top to bottom, each left to right; ``n_shelves`` lists.

    Rows follow tilted shelf edges (a line per row through box bottoms, refit and reassigned
    until stable). When fewer rows than shelves are seen, the empty shelves are chosen by how
    each row reads against the ``planogram``'s shelves and by the vertical spacing.
    """
    return _fit_rows(detections, n_shelves, planogram).members


# ---------------------------------------------------------------------------- row geometry


@dataclass(frozen=True)
class _Scale:
    """Pixels per centimetre along a row, ``a + b * x`` (perspective foreshortening)."""

    a: float
    b: float

    def at(self, x: float) -> float:
        return max(self.a + self.b * x, 1e-6)

    def to_cm(self, x1: float, x2: float) -> float:
        return (x2 - x1) / self.at((x1 + x2) / 2)

    def advance(self, x: float, cm: float) -> float:
        """The x pixel ``cm`` centimetres right of ``x`` (integrates the varying scale)."""
        if abs(self.b) < 1e-12:
            return x + cm * self.a
        return (self.at(x) * math.exp(self.b * cm) - self.a) / self.b


Edge = tuple[float, float]  # a fixture's upright edge, x = p + q * y


def _cross(edge: Edge, line: tuple[float, float]) -> float:
    """x where an upright edge crosses a row line ``y = a + b x``."""
    (p, q), (a, b) = edge, line
    return (p + q * a) / (1 - q * b)


def _fit_edge(points: list[tuple[float, float]], tol: float, side: str) -> Edge:
    """A fixture edge ``x = p + q * y`` through row end points ``(y, x)``.

    Robust: candidates through pairs of points (or upright through one) are scored by a
    truncated square loss, so rows that end early (an empty end position) count as outliers;
    ``side`` "left" makes points left of the edge costly, "right" points right of it (a row
    that ends early lies inside the fixture, never outside).
    """
    cands: list[Edge] = [(x, 0.0) for _, x in points]
    for i, (yi, xi) in enumerate(points):
        for yj, xj in points[i + 1:]:
            if abs(yj - yi) > 1e-6 and abs((xj - xi) / (yj - yi)) <= MAX_EDGE_SLOPE:
                q = (xj - xi) / (yj - yi)
                cands.append((xi - q * yi, q))
    sign = {"left": 1.0, "right": -1.0}.get(side, 0.0)

    def cost(edge: Edge) -> float:
        res = [x - (edge[0] + edge[1] * y) for y, x in points]
        return sum(min(r * r, tol * tol) + (4 * tol * tol if sign * r < -tol else 0.0)
                   for r in res)

    p, q = min(cands, key=cost)
    inliers = [(y, x) for y, x in points if abs(x - (p + q * y)) <= tol]
    ys = np.array([y for y, _ in inliers])
    if len(inliers) >= 2 and np.ptp(ys) > 0:
        q2, p2 = np.polyfit(ys, np.array([x for _, x in inliers]), 1)
        if abs(q2) <= MAX_EDGE_SLOPE:
            return float(p2), float(q2)
    return p, q


@dataclass(frozen=True)
class _RowGeometry:
    """What evaluating one shelf row needs to know about the picture."""

    line: tuple[float, float]  # bottom edge y = a + b x
    scale: _Scale
    left: float  # fixture edges at this row, x pixels
    right: float
    height: float  # typical product height, pixels

    def y(self, x: float) -> float:
        return self.line[0] + self.line[1] * x


def _row_scales(*, rows: _Rows, g: npt.NDArray[np.float64],
                width_cm: list[float | None]) -> list[_Scale]:
    """px/cm along each shelf row, from the boxes of SKUs whose width the plan states.

    Box width = scale * width + lean * height: a product seen slightly sheared (uprights
    lean under perspective) gets a wider box the taller it is. Scale is fitted as a plane
    over the picture and lean as linear in x, then scale is read along each row. Simpler
    models stand in when the boxes cannot tell these apart (one row, one product shape).
    """
    feats, target = [], []
    span = float(max(np.ptp(g[:, 0]), np.ptp(g[:, 1]), 1.0)) if len(g) else 1.0
    x0, y0 = (float(np.median(g[:, 0])), float(np.median(g[:, 1]))) if len(g) else (0.0, 0.0)
    for m, (_, b) in zip(rows.members, rows.lines, strict=True):
        for i in m:
            w = width_cm[i]
            if not w:
                continue
            x, y = (g[i, 0] - x0) / span, (g[i, 1] - y0) / span
            h = max(g[i, 3] - abs(b) * g[i, 2], 0.5 * g[i, 3])  # a tilted row: taller boxes
            feats.append([w, w * x, w * y, h, h * x])
            target.append(float(g[i, 2]))
    if not target:
        unit = float(np.median(g[:, 2])) / 10.0 if len(g) else 1.0
        return [_Scale(unit, 0.0) for _ in rows.members]
    A, t = np.array(feats), np.array(target)
    med = float(np.median(t / A[:, 0]))
    coef = np.array([med, 0.0, 0.0, 0.0, 0.0])
    for cols in (5, 3, 2):
        if len(t) < 2 * cols or np.linalg.matrix_rank(A[:, :cols]) < cols:
            continue
        c, keep = np.zeros(cols), np.ones(len(t), bool)
        for _ in range(2):  # refit without the boxes that disagree (misread SKU, occlusion)
            c = np.linalg.lstsq(A[keep, :cols], t[keep], rcond=None)[0]
            res = np.abs(t - A[:, :cols] @ c)
            keep = res <= 3 * (float(np.median(res[keep])) * 1.4826 + 1e-9)
        scale = A[:, :min(cols, 3)] @ c[:3] / A[:, 0]
        if scale.min() > 0.5 * med and scale.max() < 2 * med:
            coef = np.concatenate([c, np.zeros(5 - cols)])
            break
    c0, cx, cy = (float(v) for v in coef[:3])
    return [_Scale(c0 + (cx * -x0 + cy * (a - y0)) / span, (cx + cy * b) / span)
            for a, b in rows.lines]


def _fixture_edges(*, rows: _Rows, g: npt.NDArray[np.float64], width_cm: list[float | None],
                   scales: list[_Scale], fixture_cm: float | None) -> tuple[Edge, Edge]:
    """Left edge from where rows start; right edge the fixture width further (else where
    rows end)."""
    def half(i: int, sc: _Scale) -> float:
        w = width_cm[i]
        return sc.at(g[i, 0]) * w / 2 if w else g[i, 2] / 2

    starts, ends = [], []
    for m, sc, (a, b) in zip(rows.members, scales, rows.lines, strict=True):
        if m:
            xl = g[m[0], 0] - half(m[0], sc)
            xr = g[m[-1], 0] + half(m[-1], sc)
            starts.append((a + b * xl, xl))
            ends.append((a + b * xr, xr))
    unit = float(np.median([sc.a + sc.b * float(np.median(g[:, 0])) for sc in scales]))
    tol = EDGE_TOL_CM * unit
    left = _fit_edge(starts, tol, "left") if starts else (0.0, 0.0)
    if fixture_cm is not None:
        far = []
        for m, sc, line in zip(rows.members, scales, rows.lines, strict=True):
            if m:
                x = sc.advance(_cross(left, line), fixture_cm)
                far.append((line[0] + line[1] * x, x))
        right = _fit_edge(far, 2 * tol, "none")
    elif ends:
        right = _fit_edge(ends, tol, "right")
    else:
        right = (left[0] + 100 * unit, left[1])
    return left, right


def _row_geometry(*, rows: _Rows, g: npt.NDArray[np.float64], width_cm: list[float | None],
                  fixture_cm: float | None) -> list[_RowGeometry]:
    """Per shelf: line, px/cm along it and where the fixture's edges cross it."""
    scales = _row_scales(rows=rows, g=g, width_cm=width_cm)
    edges = _fixture_edges(rows=rows, g=g, width_cm=width_cm, scales=scales,
                           fixture_cm=fixture_cm)
    height = float(np.median(g[:, 3]))
    out = []
    for m, line, sc in zip(rows.members, rows.lines, scales, strict=True):
        xl, xr = _cross(edges[0], line), _cross(edges[1], line)
        h = float(np.median(g[m, 3])) if m else height
        out.append(_RowGeometry(line, sc, xl, max(xr, xl + 1.0), h))
    return out


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


def _facing_skus(positions: Sequence[Position]) -> list[str]:
    return [p.sku for p in positions for _ in range(p.facings)]


def _read_row(*, members: list[int], g: npt.NDArray[np.float64], width_cm: list[float | None],
              geo: _RowGeometry, min_cm: float,
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
        if cm >= HOLE_MIN * min_cm:
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


def _fill_hole(hole: _Hole, want: list[float], scale: _Scale) -> list[tuple[float, float, float]]:
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


@dataclass(frozen=True)
class _RowAlignment:
    path: list[Pair]
    found: list[int]  # per planned position: facings found in place
    taken: dict[int, list[int]]  # hole token -> planned facings it stands for


def _align_row(*, tokens: list[_Token], plan: list[int], shelf: Shelf, pos_cm: list[float],
               detections: Sequence[Detected]) -> _RowAlignment:
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
            return MATCH
        beside = {positions[plan[k]].sku for k in (p - 1, p + 1) if 0 <= k < len(plan)}
        return MISMATCH - NEIGHBOUR if sku in beside else MISMATCH

    def absorb(i: int, p: int, t: int) -> float | None:
        hole = tokens[i].hole
        want = [pos_cm[plan[k]] for k in range(p, p + t)]
        if hole is None or sum(want[:-1]) >= hole.cm:
            return None
        misfit = sum(want) - hole.cm
        misfit = abs(misfit) if hole.edge != "right" else max(misfit, 0.0)  # slack is normal
        return (HOLE_FACING * t - HOLE_FIT * misfit * t / sum(want)
                - FACED_UP * sum(1 for k in range(p, p + t) if plan[k] in faced))

    for _ in range(2):
        path = _replace_before_slack(_align(len(tokens), len(plan), pair, GAP, absorb),
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


def _judge_positions(*, shelf: Shelf, row: _RowAlignment, tokens: list[_Token],
                     plan: list[int], pos_cm: list[float], geo: _RowGeometry
                     ) -> tuple[list[PositionReport], list[GapReport]]:
    """Status per planned position; out of stock needs enough empty shelf where it belongs."""
    share: dict[int, float] = {}
    spans: dict[int, list[tuple[float, float]]] = {}
    need = [HOLE_MIN * w for w in pos_cm]
    for i, facings in row.taken.items():
        hole = tokens[i].hole
        if hole is None:
            continue
        fills = _fill_hole(hole, [pos_cm[plan[p]] for p in facings], geo.scale)
        for p, (cm, x1, x2) in zip(facings, fills, strict=True):
            j = plan[p]
            share[j] = share.get(j, 0.0) + cm
            spans.setdefault(j, []).append((x1, x2))
            if hole.edge == "right":
                need[j] = EDGE_HOLE_MIN * pos_cm[j]
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
            gaps.append(GapReport(shelf.index, j, pos.sku, box))
        else:
            status = "missing"
        positions.append(PositionReport(j, pos.sku, pos.facings, n, status, box))
    return positions, gaps


def _evaluate_shelf(*, shelf: Shelf, members: list[int], detections: Sequence[Detected],
                    g: npt.NDArray[np.float64], width_cm: list[float | None], geo: _RowGeometry,
                    unknown_label: str, occupied: Sequence[tuple[float, float]] = ()
                    ) -> _ShelfResult:
    plan = [j for j, p in enumerate(shelf.positions) for _ in range(p.facings)]
    det_cm = [g[i, 2] / geo.scale.at(g[i, 0]) for i in members]
    default_cm = max(float(np.median(det_cm)), 0.5) if det_cm else 10.0
    pos_cm = [p.width_cm or default_cm for p in shelf.positions]
    tokens = _read_row(members=members, g=g, width_cm=width_cm, geo=geo,
                       min_cm=min(pos_cm, default=default_cm), occupied=occupied)
    row = _align_row(tokens=tokens, plan=plan, shelf=shelf, pos_cm=pos_cm,
                     detections=detections)
    positions, gaps = _judge_positions(shelf=shelf, row=row, tokens=tokens, plan=plan,
                                       pos_cm=pos_cm, geo=geo)
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


def _occupied_by_row(evidence: Sequence[Box], geos: Sequence[_RowGeometry | None]
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
                     evidence: Sequence[Box] = ()) -> ComplianceReport:
    """Shelf-by-shelf compliance of one upright bay photo's detections against its plan.

    ``evidence``: boxes of products seen below the detection threshold. They count for
    nothing, but a stretch of shelf holding one is not reported as an out-of-stock gap.
    """
    dets = list(detections)
    shelves = planogram.shelves
    rows = _fit_rows(dets, len(shelves), planogram)
    widths = planogram.sku_widths()
    width_cm = [widths.get(d.sku) for d in dets]
    g = _geometry(dets)
    geos = (_row_geometry(rows=rows, g=g, width_cm=width_cm, fixture_cm=planogram.width_cm)
            if dets else [None] * len(shelves))
    occupied = _occupied_by_row(evidence, geos)
    reports, items, gaps = [], [], []
    for shelf, members, geo, occ in zip(shelves, rows.members, geos, occupied, strict=True):
        if geo is None:  # nothing seen: no shelf to measure holes on, so nothing is a gap
            res = _ShelfResult([PositionReport(j, p.sku, p.facings, 0, "missing")
                                for j, p in enumerate(shelf.positions)])
        else:
            res = _evaluate_shelf(shelf=shelf, members=members, detections=dets, g=g,
                                  width_cm=width_cm, geo=geo, unknown_label=unknown_label,
                                  occupied=occ)
        reports.append(ShelfReport(shelf.index, shelf.planned_facings,
                                   sum(p.found_facings for p in res.positions), len(members),
                                   tuple(res.positions)))
        items.extend(res.items)
        gaps.extend(res.gaps)
    placed = {i for m in rows.members for i in m}
    items.extend((i, ItemReport(d.box, d.sku, d.score, None, None, "off_shelf"))
                 for i, d in enumerate(dets) if i not in placed)
    items.sort(key=lambda t: t[0])
    return ComplianceReport(
        planogram_id=planogram.planogram_id, planogram_version=planogram.version,
        shelves=tuple(reports), items=tuple(i for _, i in items), gaps=tuple(gaps),
        osa=_osa(reports), unknown_label=unknown_label,
        **_share_of_shelf(dets, brand_of or (lambda s: s)))


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

    def to_json(self) -> dict[str, object]:
        return {"box": _round_box(self.box), "sku": self.sku, "score": round(self.score, 4),
                "shelf": self.shelf, "position": self.position, "status": self.status}


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
