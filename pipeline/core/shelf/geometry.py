"""Per-row geometry: pixels per centimetre and the fixture's edges, from boxes and plan widths."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.core.shelf.common import DEFAULT_TUNING, ShelfTuning
from pipeline.core.shelf.rows import Rows

# ---------------------------------------------------------------------------- row geometry


@dataclass(frozen=True)
class Scale:
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
        # Clamped: a fixture planned far wider than the photo shows would overflow exp().
        return (self.at(x) * math.exp(min(self.b * cm, 60.0)) - self.a) / self.b


Edge = tuple[float, float]  # a fixture's upright edge, x = p + q * y


def _cross(edge: Edge, line: tuple[float, float]) -> float:
    """x where an upright edge crosses a row line ``y = a + b x``."""
    (p, q), (a, b) = edge, line
    return (p + q * a) / (1 - q * b)


def _fit_edge(points: list[tuple[float, float]], tol: float, side: str, *,
              tuning: ShelfTuning) -> Edge:
    """A fixture edge ``x = p + q * y`` through row end points ``(y, x)``.

    Robust: candidates through pairs of points (or upright through one) are scored by a
    truncated square loss, so rows that end early (an empty end position) count as outliers;
    ``side`` "left" makes points left of the edge costly, "right" points right of it (a row
    that ends early lies inside the fixture, never outside).
    """
    cands: list[Edge] = [(x, 0.0) for _, x in points]
    for i, (yi, xi) in enumerate(points):
        for yj, xj in points[i + 1:]:
            if abs(yj - yi) > 1e-6 and abs((xj - xi) / (yj - yi)) <= tuning.max_edge_slope:
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
        if abs(q2) <= tuning.max_edge_slope:
            return float(p2), float(q2)
    return p, q


@dataclass(frozen=True)
class RowGeometry:
    """What evaluating one shelf row needs to know about the picture."""

    line: tuple[float, float]  # bottom edge y = a + b x
    scale: Scale
    left: float  # fixture edges at this row, x pixels
    right: float
    height: float  # typical product height, pixels

    def y(self, x: float) -> float:
        return self.line[0] + self.line[1] * x


def _row_scales(*, rows: Rows, g: npt.NDArray[np.float64],
                width_cm: list[float | None]) -> list[Scale]:
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
        return [Scale(unit, 0.0) for _ in rows.members]
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
    return [Scale(c0 + (cx * -x0 + cy * (a - y0)) / span, (cx + cy * b) / span)
            for a, b in rows.lines]


def _fixture_edges(*, rows: Rows, g: npt.NDArray[np.float64], width_cm: list[float | None],
                   scales: list[Scale], fixture_cm: float | None, tuning: ShelfTuning
                   ) -> tuple[Edge, Edge]:
    """Left edge from where rows start; right edge the fixture width further (else where
    rows end)."""
    def half(i: int, sc: Scale) -> float:
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
    tol = tuning.edge_tol_cm * unit
    left = _fit_edge(starts, tol, "left", tuning=tuning) if starts else (0.0, 0.0)
    if fixture_cm is not None:
        far = []
        for m, sc, line in zip(rows.members, scales, rows.lines, strict=True):
            if m:
                x = sc.advance(_cross(left, line), fixture_cm)
                far.append((line[0] + line[1] * x, x))
        right = _fit_edge(far, 2 * tol, "none", tuning=tuning)
    elif ends:
        right = _fit_edge(ends, tol, "right", tuning=tuning)
    else:
        right = (left[0] + 100 * unit, left[1])
    return left, right


def row_geometry(*, rows: Rows, g: npt.NDArray[np.float64], width_cm: list[float | None],
                 fixture_cm: float | None, tuning: ShelfTuning = DEFAULT_TUNING
                 ) -> list[RowGeometry]:
    """Per shelf: line, px/cm along it and where the fixture's edges cross it."""
    scales = _row_scales(rows=rows, g=g, width_cm=width_cm)
    edges = _fixture_edges(rows=rows, g=g, width_cm=width_cm, scales=scales,
                           fixture_cm=fixture_cm, tuning=tuning)
    height = float(np.median(g[:, 3]))
    out = []
    for m, line, sc in zip(rows.members, rows.lines, scales, strict=True):
        xl, xr = _cross(edges[0], line), _cross(edges[1], line)
        h = float(np.median(g[m, 3])) if m else height
        out.append(RowGeometry(line, sc, xl, max(xr, xl + 1.0), h))
    return out
