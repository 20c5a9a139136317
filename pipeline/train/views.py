"""Views of products for the embedder: a clean catalog packshot, and in-store looks of it.

Identities come only from packshots (GroceryStoreDataset's iconic images, the synthetic
world's drawn packs, random unknown packs) and variants of them (hue-rotated, spliced), so the
embedder learns from catalog imagery alone, as a retailer enrolling SKUs would. An in-store
view puts the product on a cluttered shelf background at any scale and angle, partly held or
occluded, piled up for loose produce, under store light and a phone camera, then applies the
pipeline's lighting normalization.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.core.letterbox import letterbox
from pipeline.core.lighting import normalize_lighting, resize_long_side
from pipeline.core.packshot import Cutout, paste
from pipeline.synth.camera import apply_effects, draw_effects
from pipeline.synth.catalog import CATALOG, draw_packshot, random_unknown
from pipeline.synth.enrol import on_white
from pipeline.train.products import MASTER_HEIGHT, _jitter_colour, _resize_height

Image = npt.NDArray[np.uint8]

# Share of in-store views seen as small as a shelf photo shows a product: the view is shrunk
# so its long side is FAR_PIXELS and the embedder sees it scaled back up, detail lost.
FAR_SHARE = 0.2
FAR_PIXELS = (20, 72)


@dataclass(frozen=True)
class Identity:
    cut: Cutout
    loose: bool  # loose produce: often seen as a pile


def letterbox_square(image: Image, size: int) -> Image:
    """The embedder's input: ``image`` fitted into ``size`` x ``size``, as at run time."""
    return letterbox(image, target_wh=(size, size))[0]


def variant(rng: np.random.Generator, base: list[Identity]) -> Identity:
    """A product that does not exist: a packshot recoloured, or two spliced side by side."""
    a = base[int(rng.integers(len(base)))]
    if rng.random() < 0.5:
        return Identity(Cutout(_jitter_colour(rng, a.cut.image, hue=True), a.cut.mask), a.loose)
    b = base[int(rng.integers(len(base)))]
    h = MASTER_HEIGHT
    ia, ib = _resize_height(a.cut.image, h), _resize_height(b.cut.image, h)
    ma, mb = _resize_height(a.cut.mask, h), _resize_height(b.cut.mask, h)
    cut = max(1, ia.shape[1] // 2)
    img = np.concatenate([ia[:, :cut], ib[:, ib.shape[1] // 2:]], axis=1)
    mask = np.concatenate([ma[:, :cut], mb[:, mb.shape[1] // 2:]], axis=1)
    return Identity(Cutout(np.ascontiguousarray(img), np.ascontiguousarray(mask)), False)


def drawn_identities() -> list[Identity]:
    out = []
    for sku in CATALOG:
        img, mask = draw_packshot(sku, MASTER_HEIGHT)
        out.append(Identity(Cutout(img, mask), False))
    return out


def random_drawn(rng: np.random.Generator) -> Identity:
    img, mask = draw_packshot(random_unknown(rng), MASTER_HEIGHT)
    return Identity(Cutout(img, mask), False)


def _clutter(rng: np.random.Generator, size: int, pool: list[Identity]) -> Image:
    """A blurred shelf of other products behind the one in view."""
    bg = np.empty((size, size, 3), np.uint8)
    bg[:] = rng.integers(20, 230, 3).astype(np.uint8)
    row = int(size * rng.uniform(0.2, 0.5))
    for y in range(-int(rng.integers(0, row)), size, row):
        x = -int(rng.integers(0, row))
        while x < size:
            other = pool[int(rng.integers(len(pool)))].cut
            h = int(row * rng.uniform(0.6, 0.95))
            img, m = _resize_height(other.image, h), _resize_height(other.mask, h)
            paste(bg, img, m, x, y + row - h)
            x += img.shape[1] + int(rng.integers(0, 4))
    k = float(rng.uniform(1.0, 6.0))
    return np.asarray(cv2.GaussianBlur(bg, (0, 0), k), np.uint8)


def _warped(rng: np.random.Generator, cut: Cutout, height: int) -> Cutout:
    """The product turned a little and seen at an angle."""
    img, mask = _resize_height(cut.image, height), _resize_height(cut.mask, height)
    h, w = mask.shape
    pad = max(2, int(0.15 * max(h, w)))
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dst = src + rng.uniform(-0.12, 0.12, (4, 2)).astype(np.float32) * np.array([w, h],
                                                                             np.float32)
    angle = np.deg2rad(rng.uniform(-15, 15))
    c, s = np.cos(angle), np.sin(angle)
    centre = np.array([w / 2, h / 2], np.float32)
    dst = (dst - centre) @ np.array([[c, -s], [s, c]], np.float32).T + centre + pad
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    size = (w + 2 * pad, h + 2 * pad)
    return Cutout(np.asarray(cv2.warpPerspective(img, m, size), np.uint8),
                  np.asarray(cv2.warpPerspective(mask, m, size), np.uint8))


def in_store_view(rng: np.random.Generator, ident: Identity, pool: list[Identity],
                  size: int) -> Image:
    """The product as a shelf photo crop or a shopper's photo shows it, ``size`` square."""
    canvas_side = int(size * 2)
    canvas = _clutter(rng, canvas_side, pool) if rng.random() < 0.8 else np.full(
        (canvas_side, canvas_side, 3), rng.integers(30, 230, 3), np.uint8)
    if ident.loose and rng.random() < 0.6:
        # A pile: many copies at random sizes and turns, filling the frame.
        for _ in range(int(rng.integers(6, 30))):
            h = int(canvas_side * rng.uniform(0.15, 0.45))
            piece = _warped(rng, Cutout(_jitter_colour(rng, ident.cut.image, hue=False),
                                        ident.cut.mask), h)
            ph, pw = piece.mask.shape
            paste(canvas, piece.image, piece.mask, int(rng.integers(-pw // 3, canvas_side)),
                   int(rng.integers(-ph // 3, canvas_side)))
        box = (0, 0, canvas_side, canvas_side)
    else:
        h = int(canvas_side * rng.uniform(0.3, 0.9))
        piece = _warped(rng, ident.cut, h)
        ph, pw = piece.mask.shape
        x = int(rng.integers(0, max(1, canvas_side - pw)))
        y = int(rng.integers(0, max(1, canvas_side - ph)))
        paste(canvas, piece.image, piece.mask, x, y)
        # Where the product lies in the frame, with a loose margin as detector boxes have.
        m = max(2, int(0.1 * max(ph, pw)))
        box = (max(0, x - m), max(0, y - m), min(canvas_side, x + pw + m),
               min(canvas_side, y + ph + m))
    if rng.random() < 0.35:  # a hand or another product in front
        skin = rng.integers(60, 200) * np.array([0.6, 0.75, 1.0])
        cx, cy = int(rng.integers(0, canvas_side)), int(rng.integers(canvas_side // 2,
                                                                     canvas_side))
        axes = (int(canvas_side * rng.uniform(0.05, 0.15)), int(canvas_side * rng.uniform(
            0.1, 0.3)))
        cv2.ellipse(canvas, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360,
                    tuple(float(v) for v in skin), -1)
    x0, y0, x1, y1 = box
    # The crop a detector would hand over, a looser one, or the whole photo a shopper took.
    r = rng.random()
    if r < 0.4:
        jx, jy = rng.uniform(-0.08, 0.08, 2) * (x1 - x0, y1 - y0)
        x0, x1 = int(max(0, x0 + jx)), int(min(canvas_side, x1 + jx))
        y0, y1 = int(max(0, y0 + jy)), int(min(canvas_side, y1 + jy))
    elif r < 0.7:
        mx, my = rng.uniform(0.1, 0.4, 2) * (x1 - x0, y1 - y0)
        x0, x1 = int(max(0, x0 - mx)), int(min(canvas_side, x1 + mx))
        y0, y1 = int(max(0, y0 - my)), int(min(canvas_side, y1 + my))
    else:
        x0 = y0 = 0
        x1 = y1 = canvas_side
    view = np.ascontiguousarray(canvas[y0:y1, x0:x1])
    view = apply_effects(view, draw_effects(rng, 1.0), rng)
    if rng.random() < 0.7:
        q = int(rng.integers(40, 95))
        view = np.asarray(cv2.imdecode(cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY,
                                                                   q])[1], cv2.IMREAD_COLOR),
                          np.uint8)
    if rng.random() < FAR_SHARE:
        view = resize_long_side(view, float(rng.uniform(*FAR_PIXELS)), min_side=2)
    return letterbox_square(normalize_lighting(view), size)


def catalog_view(rng: np.random.Generator | None, ident: Identity, size: int) -> Image:
    """The packshot as enrolled: on white, letterboxed; lightly varied when ``rng`` is given."""
    img = on_white(ident.cut)
    if rng is not None:
        img = _jitter_colour(rng, img, hue=False) if rng.random() < 0.5 else img
    return letterbox_square(img, size)
