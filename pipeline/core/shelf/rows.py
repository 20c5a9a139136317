"""Detections grouped into shelf rows, robust to perspective tilt and empty shelves."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.core.planogram import Planogram
from pipeline.core.shelf.common import DEFAULT_TUNING, Detected, ShelfTuning, _facing_skus

# ---------------------------------------------------------------------------- shelf rows


@dataclass(frozen=True)
class Rows:
    """Members per shelf (left to right) and each shelf's bottom line ``y = a + b * x``."""

    members: list[list[int]]
    lines: list[tuple[float, float]]


def rows_geometry(detections: Sequence[Detected]) -> npt.NDArray[np.float64]:
    """``(N, 4)`` columns: x centre, bottom y, width, height."""
    b = np.array([d.box for d in detections], np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, b[:, 3], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)


def _neighbour_slope(g: npt.NDArray[np.float64], *, tuning: ShelfTuning) -> float:
    """Median bottom-edge slope between each box and its nearest right-hand row neighbour."""
    slopes = []
    for i in range(len(g)):
        dx = g[:, 0] - g[i, 0]
        dy = g[:, 1] - g[i, 1]
        ok = ((dx > 0) & (dx < 2 * np.maximum(g[:, 2], g[i, 2]))
              & (np.abs(dy) < 0.25 * np.minimum(g[:, 3], g[i, 3]) + tuning.max_row_slope * dx))
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


def _split_rows(g: npt.NDArray[np.float64], n_shelves: int, *, tuning: ShelfTuning
                ) -> tuple[list[list[int]], list[tuple[float, float]]]:
    """Rows by iterated line fits, seeded by splitting de-tilted bottoms at their big jumps.

    Returns members per row (left to right) and row lines, top row first.
    """
    slope = _neighbour_slope(g, tuning=tuning)
    r = g[:, 1] - slope * g[:, 0]
    order = np.argsort(r)
    jumps = np.diff(r[order])
    height = float(np.median(g[:, 3]))
    cuts = [int(k) for k in np.argsort(-jumps)[:max(n_shelves - 1, 0)]
            if jumps[k] > tuning.row_split * height]
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
        if np.abs(g[both, 1] - (a + b * g[both, 0])).max() < tuning.row_split / 2 * height:
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
              planogram: Planogram | None, *, tuning: ShelfTuning) -> list[int]:
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
    clear = (tuning.clearance_cm * float(np.median(px_cm)) if px_cm
             else tuning.clearance_cm / 20 * float(np.median(tall)))
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


def _on_some_row(g: npt.NDArray[np.float64], n_shelves: int, *, tuning: ShelfTuning
                 ) -> npt.NDArray[np.intp]:
    """Indices of detections that stand in a shelf row.

    Bottoms (de-tilted) are grouped at their big jumps. When there are more groups than
    shelves, the smallest groups (a few false boxes on a header banner or the floor) are left
    out until the count fits, as long as each is far smaller than a typical row; otherwise a
    spurious group would take a row of its own and shift every shelf below it.
    """
    n = len(g)
    if n < 2 * max(n_shelves, 1):
        return np.arange(n)
    r = g[:, 1] - _neighbour_slope(g, tuning=tuning) * g[:, 0]
    order = np.argsort(r)
    height = float(np.median(g[:, 3]))
    breaks = np.flatnonzero(np.diff(r[order]) > tuning.row_split * height) + 1
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


def fit_rows(detections: Sequence[Detected], n_shelves: int, planogram: Planogram | None, *,
             tuning: ShelfTuning = DEFAULT_TUNING) -> Rows:
    if n_shelves <= 0:
        return Rows([], [])
    if not detections:
        return Rows([[] for _ in range(n_shelves)], [(0.0, 0.0)] * n_shelves)
    g_all = rows_geometry(detections)
    keep = _on_some_row(g_all, n_shelves, tuning=tuning)
    g = g_all[keep]
    rows, lines = _split_rows(g, n_shelves, tuning=tuning)
    rows = [[int(keep[i]) for i in row] for row in rows]
    shelf_of = (list(range(len(rows))) if len(rows) == n_shelves
                else _map_rows(rows, lines, g_all, n_shelves, [d.sku for d in detections],
                               planogram, tuning=tuning))
    members: list[list[int]] = [[] for _ in range(n_shelves)]
    known: dict[int, tuple[float, float]] = {}
    for row, line, s in zip(rows, lines, shelf_of, strict=True):
        members[s] = row
        known[s] = line
    return Rows(members, _fill_lines(known, n_shelves, g))


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
                planogram: Planogram | None = None,
                tuning: ShelfTuning = DEFAULT_TUNING) -> list[list[int]]:
    """Detection indices per shelf, top to bottom, each left to right; ``n_shelves`` lists.

    Rows follow tilted shelf edges (a line per row through box bottoms, refit and reassigned
    until stable). When fewer rows than shelves are seen, the empty shelves are chosen by how
    each row reads against the ``planogram``'s shelves and by the vertical spacing.
    """
    return fit_rows(detections, n_shelves, planogram, tuning=tuning).members
