"""Naming product crops by nearest neighbour in a catalog of packshot signatures.

A signature is what is compared: the embedder's unit vector, a hue-saturation histogram, the
pack's aspect ratio and its colour layout. The similarity of a crop to a SKU is the best over
the SKU's gallery images of ``w_embed * cosine + w_colour * histogram intersection - w_aspect *
|log ratio|``; among the gallery images that score within a small margin of a crop's best,
those whose colours lie elsewhere on the pack than the crop's lose a little
(:func:`rerank_by_layout`).
Each crop keeps its best candidates; it is named from them first among the SKUs its bay
plans, then from the whole catalog, and ``unknown`` below the calibrated threshold. Pure:
arrays in, names out.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import numpy.typing as npt

UNKNOWN = "unknown"
# What a SKU id may be, in the catalog and in planograms alike.
SKU_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
HUE_BINS, SAT_BINS = 12, 4
LAYOUT_ROWS = 4  # horizontal bands of a pack whose chroma the layout holds, top to bottom
Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Weights:
    embed: float = 1.0
    colour: float = 0.35
    aspect: float = 0.25
    threshold: float = 0.65  # below: unknown
    layout: float = 0.004  # per unit of CIELAB chroma distance (8-bit a*, b*)
    layout_margin: float = 0.05  # of a crop's best score: the near ties the layout reorders
    size: float = 0.0  # per unit of |log| size mismatch (rerank_by_size); 0: off
    size_margin: float = 0.1  # of a crop's best score: the near ties its size reorders


@dataclass(frozen=True)
class Gallery:
    """Every gallery image of every SKU, one row each."""

    skus: tuple[str, ...]  # (G,) the SKU of each row
    embeddings: Array  # (G, D) unit vectors
    colours: Array  # (G, HUE_BINS * SAT_BINS + 1) histograms summing to 1
    aspects: Array  # (G,) width / height
    # (G,) subtracted from each row's scores (hubness; see reference_offsets); None: none
    offsets: Array | None = None
    # (G, LAYOUT_ROWS * 2) colour layouts (colour_layout), NaN for a row signed without one
    # (rerank_by_layout leaves any row that is not finite as it is); None: none at all
    layouts: Array | None = None
    # The front's width and height in cm of the SKUs whose size the catalog gives
    # (rerank_by_size); the others have none.
    sizes: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @staticmethod
    def empty(dim: int) -> Gallery:
        return Gallery((), np.zeros((0, dim), np.float32),
                       np.zeros((0, HUE_BINS * SAT_BINS + 1), np.float32),
                       np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.skus)

    def with_offsets(self, offsets: Array | None) -> Gallery:
        if offsets is not None and offsets.shape != (len(self),):
            raise ValueError(f"{offsets.shape} offsets for a gallery of {len(self)} rows")
        return replace(self, offsets=offsets)


@dataclass(frozen=True)
class Match:
    sku: str
    score: float
    scope: str  # planned | catalog | none


def colour_signature(image: npt.NDArray[np.uint8], mask: npt.NDArray[np.uint8] | None = None
                     ) -> Array:
    """Hue x saturation histogram of the coloured pixels plus one bin for the grey ones
    (low saturation or very dark/bright), normalised to sum 1. ``image`` is BGR."""
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    h, s, v = hsv[:, :, 0], hsv[:, :, 1], hsv[:, :, 2]
    keep = np.ones(h.shape, bool) if mask is None else mask > 127
    grey = (s < 40) | (v < 30) | (v > 245)
    coloured = keep & ~grey
    hb = np.minimum(h[coloured].astype(np.int32) * HUE_BINS // 180, HUE_BINS - 1)
    sb = np.minimum((s[coloured].astype(np.int32) - 40) * SAT_BINS // 216, SAT_BINS - 1)
    hist = np.bincount(hb * SAT_BINS + sb, minlength=HUE_BINS * SAT_BINS).astype(np.float32)
    out = np.append(hist, np.float32((keep & grey).sum()))
    total = float(out.sum())
    return (out / total if total > 0 else out).astype(np.float32)


def colour_layout(image: npt.NDArray[np.uint8], mask: npt.NDArray[np.uint8] | None = None
                  ) -> Array:
    """Mean chroma (CIELAB a*, b*) of each of ``LAYOUT_ROWS`` horizontal bands of a pack,
    top to bottom: where on the pack its colours are. Variants of one product line (a white
    band for a yellow one) have nearly the same colour histogram and another layout.
    ``image`` is BGR; with ``mask``, only the pixels of the product count."""
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)[:, :, 1:].astype(np.float32)
    h = lab.shape[0]
    out = np.empty((LAYOUT_ROWS, 2), np.float32)
    for r in range(LAYOUT_ROWS):
        y0 = h * r // LAYOUT_ROWS
        y1 = max(h * (r + 1) // LAYOUT_ROWS, y0 + 1)
        band = lab[y0:y1].reshape(-1, 2)
        if mask is not None:
            keep = mask[y0:y1].reshape(-1) > 127
            band = band[keep] if keep.any() else band
        out[r] = band.mean(axis=0)
    return out.reshape(-1)


def rerank_by_layout(scores: Array, layouts: Array, gallery_layouts: Array, *, weight: float,
                     margin: float) -> Array:
    """``scores`` ``(N, G)`` with the near ties of each crop reordered by colour layout.

    Of the gallery rows within ``margin`` of a crop's best score, each loses ``weight``
    times how much farther its layout is from the crop's than the nearest of them. The row
    whose layout is nearest keeps its score, and rows farther down, and rows signed without
    a layout (NaN, or anything not finite), are left as they are: a crop's best score never
    rises, so the unknown threshold keeps its calibration."""
    if weight <= 0 or scores.size == 0:
        return scores
    near = scores >= scores.max(axis=1, keepdims=True) - margin
    rows, cols = np.nonzero(near)
    dist = np.abs(layouts[rows] - gallery_layouts[cols]).sum(axis=1) / LAYOUT_ROWS
    has = np.isfinite(dist)
    rows, cols, dist = rows[has], cols[has], dist[has]
    if not len(dist):
        return scores
    nearest = np.full(len(scores), np.inf, np.float32)
    np.minimum.at(nearest, rows, dist)
    out = scores.copy()
    out[rows, cols] -= weight * (dist - nearest[rows])
    return out


Candidates = list[list[tuple[str, float]]]  # per crop, (SKU, score) best first
SIZE_NEIGHBOURS = 6  # products sure of their SKU whose sizes scale a photo around a crop


def rerank_by_size(cands: Sequence[Sequence[tuple[str, float]]], boxes: npt.NDArray[np.floating],
                   sizes: Mapping[str, tuple[float, float]], *, weight: float, margin: float,
                   threshold: float, neighbours: int = SIZE_NEIGHBOURS) -> Candidates:
    """``cands`` (one list per box of ``boxes``, x1 y1 x2 y2) with the near ties of each
    crop reordered by how well its box fits each SKU's size in the catalog (``sizes``: the
    front's width and height, cm).

    One product line in two sizes (a 500 ml and a 750 ml bottle of one print) looks alike
    at any distance; only its size against the products around it tells it. The photo's
    scale around each crop, pixels per cm across and up, is the median over its
    ``neighbours`` nearest boxes that are sure of their SKU (named at ``threshold`` or more,
    no other candidate within ``margin``, a size known) of their box's width and height over
    their SKU's. Medians across and up separately absorb a detector's boxes that run wider
    or shorter than products alike. Of a crop's candidates within ``margin`` of its best
    with a size, each loses ``weight`` times how much farther its expected box is from the
    crop's (|log| of the width ratio plus of the height ratio) than the nearest of them: the
    best fit keeps its score, a best score never rises (the unknown threshold keeps its
    calibration). A crop with fewer than two sure neighbours is left as it is."""
    out = [list(c) for c in cands]
    if weight <= 0 or not sizes or len(out) < 3:
        return out
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if b.shape[0] != len(out):
        raise ValueError(f"{len(out)} candidate lists for {b.shape[0]} boxes")
    wh = np.maximum(b[:, 2:] - b[:, :2], 1e-3)
    centre = (b[:, :2] + b[:, 2:]) / 2
    sure = [i for i, c in enumerate(out) if c and c[0][0] in sizes and c[0][1] >= threshold
            and (len(c) < 2 or c[1][1] < c[0][1] - margin)]
    if len(sure) < 2:
        return out
    scale = wh[sure] / np.array([sizes[out[i][0][0]] for i in sure], np.float64)
    for i, c in enumerate(out):
        near = [sku for sku, score in c if score >= c[0][1] - margin and sku in sizes] \
            if c else []
        if len(near) < 2:
            continue
        others = np.array([j for j in range(len(sure)) if sure[j] != i], np.intp)
        if len(others) < 2:
            continue
        dist = np.hypot(*(centre[[sure[j] for j in others]] - centre[i]).T)
        local = np.median(scale[others[np.argsort(dist, kind="stable")[:neighbours]]], axis=0)
        miss = {sku: float(np.abs(np.log(wh[i] / (local * np.array(sizes[sku])))).sum())
                for sku in near}
        fit = min(miss.values())
        out[i] = sorted(((sku, round(score - weight * (miss[sku] - fit), 4) if sku in miss
                          else score) for sku, score in c), key=lambda t: -t[1])
    return out


def colour_intersection(colours: Array, gallery_colours: Array, chunk_bytes: int = 32 << 20
                        ) -> Array:
    """``(N, G)`` histogram intersection of N crops' colours with G gallery rows', a few
    rows at a time: all at once it holds N x G x bins floats, gigabytes for a hundred crops
    against a catalog of thousands of SKUs, over a worker's memory cap."""
    n, bins = colours.shape
    step = max(1, chunk_bytes // max(1, n * bins * colours.itemsize))
    out = np.empty((n, len(gallery_colours)), np.result_type(colours, gallery_colours))
    for at in range(0, len(gallery_colours), step):
        out[:, at:at + step] = np.minimum(colours[:, None, :],
                                          gallery_colours[None, at:at + step, :]).sum(axis=2)
    return out


def similarity(*, embeddings: Array, colours: Array, aspects: Array, gallery: Gallery,
               weights: Weights, layouts: Array | None = None) -> Array:
    """``(N, G)`` similarity of N crops to every gallery row; with the crops' ``layouts``
    (and a gallery that has them), near ties reordered by :func:`rerank_by_layout`."""
    if len(gallery) == 0 or len(embeddings) == 0:
        return np.zeros((len(embeddings), len(gallery)), np.float32)
    cos = embeddings @ gallery.embeddings.T
    inter = colour_intersection(colours, gallery.colours)
    ratio = np.abs(np.log(np.maximum(aspects[:, None], 1e-3)
                          / np.maximum(gallery.aspects[None, :], 1e-3)))
    out = weights.embed * cos + weights.colour * inter - weights.aspect * ratio
    if gallery.offsets is not None:
        out = out - gallery.offsets[None, :]
    scores: Array = np.asarray(out, np.float32)
    if layouts is not None and gallery.layouts is not None:
        scores = rerank_by_layout(scores, layouts, gallery.layouts, weight=weights.layout,
                                  margin=weights.layout_margin)
    return scores


REFERENCE_K = 100  # nearest reference photos averaged per gallery row


def reference_offsets(reference_scores: Array, k: int = REFERENCE_K) -> Array:
    """Per gallery row, how much to take off its scores so that no packshot wins merely by
    looking like any in-store photo: ``reference_scores`` ``(R, G)`` are the similarities
    (:func:`similarity`, no offsets) of R unlabelled photos from the stores to the G gallery
    rows. A packshot shot like an in-store photo (a pile of fruit in a crate) is near every
    query and becomes a hub that takes their names; its mean similarity to its ``k`` nearest
    reference photos measures that (cross-domain similarity local scaling, Lample et al.
    2018). The offsets are centred on their mean, so scores keep the scale the unknown
    threshold was calibrated on."""
    if reference_scores.ndim != 2 or reference_scores.shape[0] == 0:
        raise ValueError(f"reference scores must be (R > 0, G), got {reference_scores.shape}")
    k = max(1, min(k, reference_scores.shape[0]))
    top = -np.partition(-reference_scores, k - 1, axis=0)[:k]
    r = top.mean(axis=0)
    return np.asarray(r - r.mean(), np.float32)


def gallery_offsets(gallery: Gallery, *, embeddings: Array, colours: Array, aspects: Array,
                    weights: Weights, k: int = REFERENCE_K, chunk_bytes: int = 32 << 20
                    ) -> Array:
    """:func:`reference_offsets` of ``gallery`` from the signatures of R reference photos,
    scored a few at a time (the colour term holds photos x G x bins floats: at most
    ``chunk_bytes`` of them)."""
    plain = gallery.with_offsets(None)
    chunk = max(1, chunk_bytes // max(1, len(gallery) * colours.shape[1] * 4))
    rows = [similarity(embeddings=embeddings[i:i + chunk], colours=colours[i:i + chunk],
                       aspects=aspects[i:i + chunk], gallery=plain, weights=weights)
            for i in range(0, len(embeddings), chunk)]
    return reference_offsets(np.concatenate(rows) if rows else np.zeros((0, len(gallery)),
                                                                         np.float32), k)


def best_per_sku(scores: Array, skus: Sequence[str]) -> tuple[list[str], Array]:
    """Collapse gallery rows to SKUs: ``(N, S)`` best score per SKU and the SKU order."""
    names = sorted(set(skus))
    index = {s: i for i, s in enumerate(names)}
    out = np.full((scores.shape[0], len(names)), -np.inf, np.float32)
    for g, sku in enumerate(skus):
        j = index[sku]
        out[:, j] = np.maximum(out[:, j], scores[:, g])
    return names, out


def candidates(scores: Array, gallery: Gallery, k: int) -> list[list[tuple[str, float]]]:
    """The ``k`` most similar SKUs of each crop with their scores, best first."""
    names, per_sku = best_per_sku(scores, gallery.skus)
    order = np.argsort(-per_sku, axis=1, kind="stable")[:, :k]
    return [[(names[j], round(float(per_sku[i, j]), 4)) for j in row]
            for i, row in enumerate(order)]


def choose(cands: Sequence[tuple[str, float]], *, planned: Collection[str] | None,
           threshold: float) -> Match:
    """A crop's SKU from its candidates: the best planned SKU if it clears ``threshold``,
    else the best of the catalog if it does, else unknown."""
    if planned:
        for sku, score in cands:
            if sku in planned:
                if score >= threshold:
                    return Match(sku, score, "planned")
                break
    if cands and cands[0][1] >= threshold:
        return Match(cands[0][0], cands[0][1], "catalog")
    return Match(UNKNOWN, cands[0][1] if cands else 0.0, "none")


def nearly_as_like(cands: Sequence[tuple[str, float]], match: Match, *, threshold: float,
                   margin: float, floor: float | None = None) -> frozenset[str]:
    """The other SKUs a crop named ``match`` is nearly as like: at least ``threshold`` and
    within ``margin`` of its best candidate. Look-alikes (one product line in two sizes) are
    told apart by little more than noise; where the planogram places one of these, the
    shelf check names the crop so (see ``pipeline.core.shelf.evaluate_shelves``) rather
    than report a misplaced product on a coin toss.

    An unknown crop has none, unless ``floor`` (under ``threshold``) is given: then those
    at least ``floor`` and within ``margin`` of its best, so that a product too small or
    blurred to be named surely is named by where it stands when the SKU planned there is
    among its best candidates."""
    if margin <= 0 or not cands:
        return frozenset()
    if match.sku == UNKNOWN:
        if floor is None:
            return frozenset()
        threshold = floor  # its best is under the threshold: a floor above it admits nothing
    lower = max(threshold, cands[0][1] - margin)
    return frozenset(sku for sku, score in cands if sku != match.sku and score >= lower)


def name_crop(cands: Sequence[tuple[str, float]], *, planned: Collection[str] | None,
              threshold: float, margin: float, floor: float | None = None
              ) -> tuple[str, frozenset[str]]:
    """A crop's SKU (:func:`choose`) and the SKUs it is nearly as like
    (:func:`nearly_as_like`), as the shelf check takes them."""
    match = choose(cands, planned=planned, threshold=threshold)
    return match.sku, nearly_as_like(cands, match, threshold=threshold, margin=margin,
                                     floor=floor)


def crop_box(image: npt.NDArray[np.uint8], box: Sequence[float], margin: float = 0.05
             ) -> npt.NDArray[np.uint8]:
    """The pixels of ``box`` (x1, y1, x2, y2) with a small margin, clipped to the image."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    a, b = int(max(0, x1 - mx)), int(max(0, y1 - my))
    c, d = int(min(w, np.ceil(x2 + mx))), int(min(h, np.ceil(y2 + my)))
    if c <= a or d <= b:
        return np.zeros((1, 1, 3), np.uint8)
    return image[b:d, a:c]
