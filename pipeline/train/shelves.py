"""Dense shelf scenes cut and pasted from real product imagery, with exact product boxes.

Each scene is a crop of a shelf fixture as a store photo shows it: rows of packs standing on
boards, each product repeated in facings side by side, some stacked, with gaps, price tags,
shelf talkers, signs and the store around the fixture; then a camera not square to the
shelf, its optics and sensor, JPEG, and the pipeline's own lighting normalization (the detect
stage sees normalized images). Every visible product gets one class-agnostic box.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.core.lighting import normalize_lighting
from pipeline.core.packshot import Cutout
from pipeline.synth.camera import apply_effects, draw_effects
from pipeline.train.products import ProductBank

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class ShelfScene:
    image: Image  # (H, W, 3) BGR, lighting normalized
    boxes: npt.NDArray[np.float32]  # (N, 4) x1 y1 x2 y2


def _chance(rng: np.random.Generator, share: float) -> bool:
    """True with probability ``share``. A share of 0 draws nothing from ``rng``, so a style
    knob left off leaves every other draw, and the images of the recipes before it, as
    they were."""
    return share > 0.0 and rng.random() < share


def _paste(canvas: Image, owner: npt.NDArray[np.int32], cut: Cutout, x: int, y: int,
           index: int) -> None:
    """Alpha-paste ``cut`` at ``(x, y)``; ``owner`` records which product each pixel shows."""
    h, w = cut.mask.shape
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return
    m = cut.mask[y0 - y:y1 - y, x0 - x:x1 - x]
    a = m[:, :, None].astype(np.float32) / 255.0
    src = cut.image[y0 - y:y1 - y, x0 - x:x1 - x].astype(np.float32)
    dst = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = (src * a + dst * (1 - a)).astype(np.uint8)
    region = owner[y0:y1, x0:x1]
    region[m > 127] = index


def _resized(cut: Cutout, w: int, h: int) -> Cutout:
    interp = cv2.INTER_AREA if h < cut.mask.shape[0] else cv2.INTER_LINEAR
    return Cutout(np.asarray(cv2.resize(cut.image, (w, h), interpolation=interp), np.uint8),
                  np.asarray(cv2.resize(cut.mask, (w, h), interpolation=interp), np.uint8))


def _tiles(rng: np.random.Generator, W: int, H: int) -> Image:
    """A tiled store floor (or ceiling panels with lights), seen at an angle."""
    base = rng.integers(150, 240)
    img = np.full((H * 2, W * 2, 3), base, np.uint8)
    step = int(rng.integers(20, 90))
    line = tuple(int(v) for v in rng.integers(60, 200, 3))
    for x in range(0, W * 2, step):
        cv2.line(img, (x, 0), (x, H * 2), line, int(rng.integers(1, 4)))
    for y in range(0, H * 2, step):
        cv2.line(img, (0, y), (W * 2, y), line, int(rng.integers(1, 4)))
    if rng.random() < 0.4:  # ceiling lights
        for _ in range(int(rng.integers(2, 8))):
            x, y = int(rng.integers(0, W * 2)), int(rng.integers(0, H * 2))
            cv2.rectangle(img, (x, y), (x + step * 2, y + step // 3), (255, 255, 255), -1)
    src = np.array([[0, 0], [W * 2, 0], [W * 2, H * 2], [0, H * 2]], np.float32)
    squeeze = rng.uniform(0.1, 0.45) * W
    dst = np.array([[squeeze, 0], [W - squeeze, 0], [W, H], [0, H]], np.float32)
    if rng.random() < 0.5:
        dst = dst[[3, 2, 1, 0]]
    m = cv2.getPerspectiveTransform(src, dst)
    return np.asarray(cv2.warpPerspective(img, m, (W, H), borderMode=cv2.BORDER_REFLECT),
                      np.uint8)


def _structures(rng: np.random.Generator, image: Image) -> None:
    """The building around the fixture: ducts, beams, pillars, doors and window frames, big
    flat-shaded shapes with hard edges that are not products."""
    H, W = image.shape[:2]
    for _ in range(int(rng.integers(1, 5))):
        w, h = int(W * rng.uniform(0.1, 0.7)), int(H * rng.uniform(0.05, 0.5))
        x, y = int(rng.integers(-w // 3, W)), int(rng.integers(-h // 3, H))
        base = rng.integers(40, 250, 3).astype(np.float32)
        quad = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)
        quad += rng.uniform(-0.15, 0.15, (4, 2)).astype(np.float32) * np.array([w, h],
                                                                              np.float32)
        mask = np.zeros((H, W), np.uint8)
        cv2.fillConvexPoly(mask, quad.astype(np.int32), 255)
        t = np.linspace(float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.8, 1.15)), W,
                        dtype=np.float32)
        shaded = np.clip(base[None, None, :] * t[None, :, None], 0, 255).astype(np.uint8)
        on = mask > 0
        image[on] = np.broadcast_to(shaded, (H, W, 3))[on]
        if rng.random() < 0.6:
            edge = tuple(int(v) for v in rng.integers(0, 256, 3))
            cv2.polylines(image, [quad.astype(np.int32)], True, edge, int(rng.integers(1, 4)))


def _background(rng: np.random.Generator, W: int, H: int, bank: ProductBank) -> Image:
    """The store behind and around the fixture: walls, ceiling, floor, blurred clutter and
    the building's structures."""
    if rng.random() < 0.3:
        bg = _tiles(rng, W, H)
    elif rng.random() < 0.4:
        tex = bank.textures[int(rng.integers(len(bank.textures)))]
        bg = np.asarray(cv2.GaussianBlur(cv2.resize(tex, (W, H)), (0, 0),
                                         float(rng.uniform(6, 20))), np.uint8)
    else:
        top, bottom = rng.integers(30, 240, 3), rng.integers(30, 240, 3)
        t = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
        grad = top[None, None, :] * (1 - t) + bottom[None, None, :] * t
        bg = np.broadcast_to(grad, (H, W, 3)).astype(np.uint8).copy()
    if rng.random() < 0.5:
        _structures(rng, bg)
    return bg


def _price_tags(rng: np.random.Generator, canvas: Image, x0: int, x1: int, y: int, h: int
                ) -> None:
    x = x0 + int(rng.integers(0, 40))
    colour = (255, 255, 255) if rng.random() < 0.7 else (60, 230, 250)
    while x < x1:
        w = int(h * rng.uniform(1.2, 2.6))
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, -1)
        for k in range(int(rng.integers(1, 4))):
            ly = y + int(h * (0.25 + 0.25 * k))
            cv2.line(canvas, (x + 2, ly), (x + int(w * rng.uniform(0.3, 0.9)), ly),
                     (30, 30, 30), 1)
        x += w + int(rng.integers(h, 8 * h))


def _price_labels(rng: np.random.Generator, canvas: Image, owner: npt.NDArray[np.int32],
                  x0: int, x1: int, y: int, board: int) -> None:
    """Shelf-edge labels along ``x0``-``x1`` from ``y``: a price in large digits on white,
    yellow or orange, a few as taller sale tags over the products below; they hide what
    they cover."""
    H = owner.shape[0]
    x = x0 + int(rng.integers(0, 3 * board + 1))
    while x < x1:
        sale = rng.random() < 0.25
        h = max(6, int(board * (rng.uniform(1.6, 3.0) if sale else rng.uniform(0.9, 1.4))))
        w = int(h * (rng.uniform(1.0, 1.6) if sale else rng.uniform(1.6, 2.8)))
        paper = ((255, 255, 255) if rng.random() < 0.5 else (40, 220, 250) if rng.random() < 0.7
                 else tuple(int(v) for v in rng.integers(0, 256, 3)))
        tag = np.full((h, w, 3), paper, np.uint8)
        cents = int(rng.integers(0, 100))
        price = (f"{int(rng.integers(0, 30))}.{cents:02d}" if rng.random() < 0.6
                 else f"${int(rng.integers(1, 30))}.{cents:02d}" if rng.random() < 0.5
                 else f"{int(rng.integers(2, 5))}/{int(rng.integers(2, 10))}")
        ink = (20, 20, 20) if rng.random() < 0.7 else (30, 30, 200)
        font = cv2.FONT_HERSHEY_DUPLEX if rng.random() < 0.5 else cv2.FONT_HERSHEY_SIMPLEX
        (tw, th), _ = cv2.getTextSize(price, font, 1.0, 2)
        scale = min(0.9 * w / tw, 0.6 * h / th)
        cv2.putText(tag, price, (int(w * 0.05), int(h * 0.75)), font, scale, ink,
                    max(1, round(scale * 2)), cv2.LINE_AA)
        if rng.random() < 0.6:  # a barcode or the item line under the price
            for k in range(int(rng.integers(3, 12))):
                bx = int(w * 0.1) + 2 * k
                cv2.line(tag, (bx, int(h * 0.82)), (bx, h - 1), (25, 25, 25), 1)
        ya, yb, xb = max(y, 0), min(y + h, H), min(x + w, x1)
        if xb > x and yb > ya:
            canvas[ya:yb, x:xb] = tag[ya - y:yb - y, :xb - x]
            owner[ya:yb, x:xb] = -1
        x += w + int(rng.integers(board, 10 * board + 1))


def _sign(rng: np.random.Generator, canvas: Image, owner: npt.NDArray[np.int32]) -> None:
    """A hanging sign or shelf talker: printed, unlabelled, hiding the products behind it."""
    H, W = owner.shape
    w, h = int(W * rng.uniform(0.08, 0.3)), int(H * rng.uniform(0.05, 0.2))
    x, y = int(rng.integers(-w // 2, W)), int(rng.integers(-h // 2, H))
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    cover = np.zeros((H, W), np.uint8)
    if rng.random() < 0.5:
        cv2.rectangle(cover, (x, y), (x + w, y + h), 255, -1)
    else:
        cv2.ellipse(cover, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 255, -1)
    canvas[cover > 0] = colour
    owner[cover > 0] = -1
    text = "".join("0123456789%SALE"[int(i)] for i in rng.integers(0, 15, rng.integers(2, 5)))
    cv2.putText(canvas, text, (x + 3, y + h - 4), cv2.FONT_HERSHEY_DUPLEX,
                max(0.3, h / 40), tuple(int(v) for v in rng.integers(0, 256, 3)), 2)


def _metal(rng: np.random.Generator, w: int, h: int) -> Image:
    """A door frame or handle: a dark or brushed-metal bar, its highlight along its length."""
    base = rng.integers(15, 70, 3) if rng.random() < 0.5 else rng.integers(120, 220, 3)
    xs = np.linspace(-1.0, 1.0, max(1, w), dtype=np.float32)
    centre = float(rng.uniform(-0.5, 0.5))
    profile = 0.6 + 0.4 * np.cos(np.clip(xs, -1, 1) * np.pi / 2) \
        + float(rng.uniform(0.2, 0.8)) * np.exp(-((xs - centre) ** 2) / 0.02)
    bar = base[None, :].astype(np.float32) * profile[:, None]
    return np.asarray(np.broadcast_to(np.clip(bar, 0, 255)[None], (max(1, h), max(1, w), 3)),
                      np.uint8)


def _cooler_doors(rng: np.random.Generator, canvas: Image, owner: npt.NDArray[np.int32]
                  ) -> None:
    """Glass doors in front of the shelves, as in a cooler: vertical frames (and sometimes a
    rail across) hide what they cover, and a handle runs beside a frame. Frames and handles
    are not products (the glass's reflections are :func:`_glare`)."""
    H, W = owner.shape
    pitch = W * float(rng.uniform(0.45, 1.2))
    x = -float(rng.uniform(0, pitch))
    while x < W:
        fw = max(3, int(W * rng.uniform(0.02, 0.09)))
        x0, x1 = max(0, int(x)), min(W, int(x) + fw)
        if x1 > x0:
            canvas[:, x0:x1] = _metal(rng, x1 - x0, H)
            owner[:, x0:x1] = -1
        if rng.random() < 0.7:  # the handle of the door beside the frame
            hw = max(2, int(W * rng.uniform(0.008, 0.02)))
            hh = int(H * rng.uniform(0.25, 0.7))
            right = rng.random() < 0.5
            gap = int(W * rng.uniform(0.005, 0.03))
            hx = int(x) + fw + gap if right else int(x) - hw - gap
            hy = int(rng.integers(-hh // 4, max(1, H - hh // 2)))
            a0, a1, b0, b1 = max(0, hx), min(W, hx + hw), max(0, hy), min(H, hy + hh)
            if a1 > a0 and b1 > b0:
                canvas[b0:b1, a0:a1] = _metal(rng, a1 - a0, b1 - b0)
                owner[b0:b1, a0:a1] = -1
        x += pitch
    if rng.random() < 0.4:  # a rail across the doors
        rh = max(3, int(H * rng.uniform(0.015, 0.05)))
        y0 = int(rng.integers(0, max(1, H - rh)))
        canvas[y0:y0 + rh] = _metal(rng, rh, W).transpose(1, 0, 2)
        owner[y0:y0 + rh] = -1


def _glare(rng: np.random.Generator, image: Image) -> Image:
    """Reflections on glass: soft slanted bands of light over everything behind it."""
    H, W = image.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    angle = float(rng.uniform(-0.6, 0.6))
    u = xx * np.cos(angle) + yy * np.sin(angle)
    light = np.zeros((H, W), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        c, width = float(rng.uniform(0, W)), float(W * rng.uniform(0.02, 0.15))
        light += float(rng.uniform(0.15, 0.5)) * np.exp(-((u - c) ** 2) / (2 * width**2))
    alpha = np.clip(light, 0, 0.7)[:, :, None]
    out = image.astype(np.float32) * (1 - alpha) + 255.0 * alpha
    return np.asarray(np.clip(out, 0, 255), np.uint8)


def _edge_shading(rng: np.random.Generator, image: Image) -> Image:
    """Packs are solids: their sides turn away from the light and shadow their neighbours,
    so a facing's edges are darker than its middle."""
    if rng.random() < 0.2:
        return image
    h, w = image.shape[:2]
    xs = np.abs(np.linspace(-1.0, 1.0, w, dtype=np.float32))
    ys = np.linspace(0.0, 1.0, h, dtype=np.float32)
    side = float(rng.uniform(0.06, 0.2))
    depth = float(rng.uniform(0.25, 0.6))
    gx = 1.0 - depth * np.clip((xs - (1 - side)) / side, 0, 1)
    gy = 1.0 - float(rng.uniform(0.0, 0.3)) * np.clip((0.06 - ys) / 0.06, 0, 1)
    gain = gy[:, None] * gx[None, :]
    return np.asarray(np.clip(image.astype(np.float32) * gain[:, :, None], 0, 255), np.uint8)


@dataclass(frozen=True)
class RowStyle:
    """How a row's products are drawn. The defaults are the rows version 5 trained on."""

    flat_stacks: float = 0.0  # share of wide packs that are boxes lying down, stacked
    thin_share: float = 0.3  # share of products stretched thin (1:5 to 1:1.8)
    # Share of upright packs (taller than 1.6:1) that may stand stacked; the others stand
    # alone, as bottles, tubes and tall cartons do.
    thin_stacks: float = 1.0
    # Share of upright packs whose face has two parts (a cap and shoulder, a sleeve, a
    # label on the lower half): a line across a pack that is not the edge between two packs.
    two_part: float = 0.0
    # Share of rows seen from above: the packs behind each facing show over its top as
    # darker slivers, parts of no product's box.
    depth: float = 0.0
    # Share of products whose facings touch, unshaded and alike (no gap, no darker edges).
    seamless: float = 0.0
    # Share of shelf edges whose tags print their prices in large digits, some of them sale
    # tags hanging over the row below: print that is not a product.
    price_labels: float = 0.0
    # Share of upright packs standing alone drawn as bottles: the print only a label band on
    # a body of liquid or plastic, a cap and often a narrower neck above it.
    bottles: float = 0.0
    # Share of rows that are pegboard: packs hanging from hooks in tiers, each with a header
    # card, the hook and its price label over the pack's top.
    pegs: float = 0.0


def _packs_behind(rng: np.random.Generator, canvas: Image, owner: npt.NDArray[np.int32],
                  cut: Cutout, x: int, top: int, ceiling: int) -> None:
    """One to three copies of ``cut`` behind a facing whose top is at ``top``, each higher,
    narrower and darker than the one before, none above ``ceiling`` (the row's top)."""
    h, w = cut.mask.shape
    step = max(2, int(h * rng.uniform(0.1, 0.3)))
    for k in range(int(rng.integers(1, 4)), 0, -1):  # the farthest first
        y = top - k * step
        if y < ceiling:
            continue
        bw = max(2, round(w * 0.96**k))
        back = _resized(cut, bw, h)
        dark = np.clip(back.image.astype(np.float32) * 0.8**k, 0, 255).astype(np.uint8)
        _paste(canvas, owner, Cutout(dark, back.mask), x + (w - bw) // 2, y, -1)


def _two_part(rng: np.random.Generator, bank: ProductBank, cut: Cutout) -> Cutout:
    """``cut`` with its top 15-50 % repainted: another print or a flat colour, shaded."""
    h, w = cut.mask.shape
    split = max(2, int(h * rng.uniform(0.15, 0.5)))
    img = cut.image.copy()
    if rng.random() < 0.5:
        top = _resized(bank.draw(rng), w, split).image
    else:
        top = np.full((split, w, 3), rng.integers(0, 256, 3), np.uint8)
    shade = np.linspace(float(rng.uniform(0.7, 1.0)), 1.0, split, dtype=np.float32)
    img[:split] = np.clip(top.astype(np.float32) * shade[:, None, None], 0, 255).astype(np.uint8)
    return Cutout(img, cut.mask)


def _bottle(rng: np.random.Generator, cut: Cutout) -> Cutout:
    """``cut`` as a bottle: its print squeezed into a label band (a quarter to two thirds of
    the height) on a body of dark or coloured liquid or of plastic, shaded round with a
    highlight, under a cap; most have shoulders and a neck narrower than the body."""
    h, w = cut.mask.shape
    top = int(h * rng.uniform(0.2, 0.55))
    bottom = min(h, max(top + max(2, h // 4), int(h * rng.uniform(0.7, 0.98))))
    r = rng.random()
    colour = (rng.integers(5, 60, 3) if r < 0.35  # cola, dark glass
              else rng.integers(0, 256, 3) * rng.uniform(0.3, 0.8) if r < 0.6  # juice, oil
              else rng.integers(0, 256, 3))  # opaque plastic
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)
    body = np.full((h, w, 3), colour, np.float32) * (1.0 - 0.45 * xs**2)[None, :, None]
    cx, half = rng.uniform(-0.6, -0.2), rng.uniform(0.04, 0.12)
    glint = np.clip(1.0 - np.abs(xs - cx) / half, 0.0, 1.0) * rng.uniform(0.3, 0.7)
    body += (255.0 - body) * glint[None, :, None]
    body[top:bottom] = cv2.resize(cut.image, (w, bottom - top), interpolation=cv2.INTER_AREA)
    cap = max(2, int(h * rng.uniform(0.04, 0.1)))
    body[:cap] = rng.integers(0, 256, 3).astype(np.float32)
    mask = np.full((h, w), 255, np.uint8)
    if rng.random() < 0.7 and w >= 6:
        neck = max(2, int(w * rng.uniform(0.3, 0.55)))
        n0 = (w - neck) // 2
        neck_end = int(min(top, h * rng.uniform(0.08, 0.25)))
        shoulder = int(min(top, neck_end + h * rng.uniform(0.05, 0.2)))
        mask[:shoulder] = 0
        mask[:max(neck_end, cap), n0:n0 + neck] = 255
        poly = np.array([[n0, neck_end], [n0 + neck - 1, neck_end], [w - 1, shoulder],
                         [0, shoulder]], np.int32)
        cv2.fillConvexPoly(mask, poly, 255)
    return Cutout(np.clip(body, 0, 255).astype(np.uint8), mask)


def _fill_row(rng: np.random.Generator, bank: ProductBank, canvas: Image,
              owner: npt.NDArray[np.int32], boxes: list[tuple[int, int, int, int]],
              x0: int, x1: int, base: int, row_h: int, style: RowStyle = RowStyle()) -> None:
    """Products standing on a board at ``base``: facings of one product side by side, drawn
    as ``style`` says."""
    deep = _chance(rng, style.depth)
    x = x0 - int(rng.integers(0, row_h))
    while x < x1:
        if rng.random() < 0.08:  # an out-of-stock gap
            x += int(row_h * rng.uniform(0.3, 1.5))
            continue
        master = bank.draw(rng)
        mh, mw = master.mask.shape
        # Real shelves hold more thin packs (bottles, cans, tubes) and wide ones (flat packs,
        # multipacks, boxes lying down) than the packshots show: ``thin_share`` of the
        # products are stretched thin (1:5 to 1:1.8), a quarter wide (1.2:1 to 3.2:1).
        r = rng.random()
        aspect = (mw / mh * rng.uniform(0.9, 1.1) if r < 0.75 - style.thin_share
                  else float(np.exp(rng.uniform(np.log(0.2), np.log(0.55)))) if r < 0.75
                  else float(np.exp(rng.uniform(np.log(1.2), np.log(3.2)))))
        # Stores stack flat packs two or three high; each unit is its own product. Boxes
        # lying down (toothpaste, tubes, bars: up to 5:1) stack up to four high.
        if aspect > 1.2 and rng.random() < style.flat_stacks:
            aspect = float(np.exp(rng.uniform(np.log(2.0), np.log(5.0))))
            layers = int(rng.choice((1, 2, 3, 4), p=(0.2, 0.35, 0.3, 0.15)))
        else:
            layers = int(rng.choice((1, 2, 3), p=(0.6, 0.28, 0.12)))
        upright = aspect < 1 / 1.6
        if upright and style.thin_stacks < 1.0 and rng.random() >= style.thin_stacks:
            layers = 1
        fill = rng.uniform(0.75, 0.97) if rng.random() < 0.8 else rng.uniform(0.45, 0.75)
        if deep:  # seen from above, the row shows room over its front packs
            fill = min(fill, float(rng.uniform(0.5, 0.8)))
        h = max(6, int(row_h * fill / layers))
        w = max(4, round(h * aspect))
        cut = _resized(master, w, h)
        if upright and layers == 1 and _chance(rng, style.bottles):
            cut = _bottle(rng, cut)
        elif upright and _chance(rng, style.two_part):
            cut = _two_part(rng, bank, cut)
        # Seamless facings touch, unshaded and alike: only the print's repeat tells them apart.
        seamless = _chance(rng, style.seamless)
        if not seamless:
            cut = Cutout(_edge_shading(rng, cut.image), cut.mask)
        facings = int(min(12, rng.geometric(0.3)))
        r = rng.random()
        gap = int(rng.integers(0, 3)) if r < 0.65 else int(rng.integers(2, 6)) if r < 0.9 else -1
        for _ in range(facings):
            if x >= x1:
                break
            if deep:
                _packs_behind(rng, canvas, owner, cut, x, base - h * layers, base - row_h)
            for layer in range(layers):
                y = base - h * (layer + 1) - int(rng.integers(0, 2))
                shade = float(rng.uniform(0.9, 1.08))
                img = cut.image if seamless else np.clip(
                    cut.image.astype(np.float32) * shade, 0, 255).astype(np.uint8)
                boxes.append((x, y, x + w, y + h))
                _paste(canvas, owner, Cutout(img, cut.mask), x, y, len(boxes) - 1)
            x += w + (0 if seamless else gap + int(rng.integers(0, 2)))
        x += int(rng.integers(0, 6))


def _pegboard(rng: np.random.Generator, bank: ProductBank, canvas: Image,
              owner: npt.NDArray[np.int32], boxes: list[tuple[int, int, int, int]],
              x0: int, x1: int, top: int, base: int) -> None:
    """A pegboard between ``top`` and ``base``: a grid of holes, and packs hanging from
    hooks in one to three tiers, one product a run of columns. A pack's header card, with
    the slot it hangs by, is part of the pack; the hook and the price label on its end are
    not, and hide what they cover, as does the pack hanging behind when it shows."""
    H, W = canvas.shape[:2]
    ya, yb = max(top, 0), min(base, H)
    if yb - ya < 12 or x1 <= x0:
        return
    board = (rng.integers(0, 256, 3) if rng.random() < 0.4
             else np.full(3, rng.integers(40, 236))).astype(np.float32)
    canvas[ya:yb, x0:x1] = board.astype(np.uint8)
    owner[ya:yb, x0:x1] = -1
    pitch = int(rng.integers(6, 16))
    dot = max(1, pitch // 5)
    holes = np.zeros((yb - ya, x1 - x0), bool)
    for dy in range(dot):
        for dx in range(dot):
            holes[(pitch // 2 + dy)::pitch, (pitch // 2 + dx)::pitch] = True
    canvas[ya:yb, x0:x1][holes] = (board * 0.35).astype(np.uint8)
    tiers = int(rng.choice((1, 2, 3), p=(0.4, 0.4, 0.2)))
    tier_h = (base - top) / tiers
    metal = tuple(int(v) for v in np.full(3, rng.integers(150, 230)))
    for t in range(tiers):
        ty = int(top + t * tier_h)
        h = max(8, int(tier_h * rng.uniform(0.55, 0.85)))
        # Packs run past the board only where the frame cuts it.
        x = x0 - int(rng.integers(0, h)) if x0 <= 0 else x0 + int(rng.integers(0, pitch))
        while x < x1:
            master = bank.draw(rng)
            mh, mw = master.mask.shape
            aspect = (mw / mh if rng.random() < 0.5 else float(rng.uniform(0.45, 1.1)))
            w = max(4, round(h * aspect))
            cut = _resized(master, w, h)
            img, mask = cut.image.copy(), np.full((h, w), 255, np.uint8)
            header = max(2, int(h * rng.uniform(0.1, 0.22)))
            if rng.random() < 0.7:  # a card above the product's print
                img[:header] = rng.integers(0, 256, 3).astype(np.uint8)
            slot_w, slot_h = max(1, w // 4), max(1, header // 3)
            sx, sy = (w - slot_w) // 2, header // 3
            mask[sy:sy + slot_h, sx:sx + slot_w] = 0  # the slot shows the board behind
            pack = Cutout(_edge_shading(rng, img), mask)
            hook = int(tier_h * rng.uniform(0.04, 0.12))
            py = ty + hook  # the pack's top
            gap = int(w * rng.uniform(0.05, 0.4))
            behind = rng.random() < 0.5
            labelled = rng.random() < 0.6
            fits = True
            for _ in range(int(min(8, rng.geometric(0.45)))):
                if x >= x1 or (x + w > x1 and x1 < W):
                    fits = False
                    break
                _hang(rng, canvas, owner, boxes, pack, x, ty, py, header, (sy, slot_h), metal,
                      behind, labelled)
                x += w + gap
            if not fits:
                break
            x += int(rng.integers(0, max(1, w)))


def _hang(rng: np.random.Generator, canvas: Image, owner: npt.NDArray[np.int32],
          boxes: list[tuple[int, int, int, int]], pack: Cutout, x: int, hook_y: int, y: int,
          header: int, slot: tuple[int, int], metal: tuple[int, ...], behind: bool,
          labelled: bool) -> None:
    """``pack`` hung at ``(x, y)`` from a hook at ``hook_y``, its header card ``header``
    pixels tall and its slot ``(top, height)`` in the pack; ``behind``: the next pack on the
    hook shows over it, a little higher and darker; ``labelled``: the hook's price label
    covers the header."""
    H, W = canvas.shape[:2]
    h, w = pack.mask.shape
    sy, slot_h = slot
    if behind:
        up = min(y - hook_y, int(rng.integers(2, max(3, header))))
        dark = np.clip(pack.image.astype(np.float32) * 0.7, 0, 255).astype(np.uint8)
        _paste(canvas, owner, Cutout(dark, pack.mask), x + 1, y - up, -1)
    boxes.append((x, y, x + w, y + h))
    _paste(canvas, owner, pack, x, y, len(boxes) - 1)
    cx, thick = x + w // 2, max(1, w // 25)
    cv2.line(canvas, (cx, hook_y + thick), (cx, y + sy + slot_h // 2), metal, thick)
    if labelled:
        lw, lh = max(3, int(w * 0.45)), max(2, int(h * 0.1))
        lx, ly = cx - lw // 2, y + sy
        ya, yb, xa, xb = max(ly, 0), min(ly + lh, H), max(lx, 0), min(lx + lw, W)
        if yb > ya and xb > xa:
            canvas[ya:yb, xa:xb] = rng.integers(180, 256, 3).astype(np.uint8)
            owner[ya:yb, xa:xb] = -1


def _view(rng: np.random.Generator, W: int, H: int, amount: float
          ) -> npt.NDArray[np.float64]:
    src = np.array([[0, 0], [W, 0], [W, H], [0, H]], np.float32)
    dst = src + rng.uniform(-amount, amount, (4, 2)).astype(np.float32) * np.array([W, H],
                                                                                 np.float32)
    angle = np.deg2rad(rng.uniform(-4, 4))
    c, s = np.cos(angle), np.sin(angle)
    centre = np.array([W / 2, H / 2], np.float32)
    dst = ((dst - centre) @ np.array([[c, -s], [s, c]], np.float32).T + centre).astype(
        np.float32)
    return cv2.getPerspectiveTransform(src, dst).astype(np.float64)


def _oblique(rng: np.random.Generator, W: int, H: int) -> npt.NDArray[np.float64]:
    """A view along the aisle: the fixture's far side (the right; batches are mirrored half
    the time) a third to three quarters as tall as its near side, its facings foreshortened
    into thin slivers, its boards converging."""
    a, b = rng.uniform(0.0, 0.25, 2)
    near = H * (1 + a + b)
    far = near * float(rng.uniform(0.3, 0.75))
    top = (H - far) * float(rng.uniform(0.3, 0.7))
    src = np.array([[0, 0], [W, 0], [W, H], [0, H]], np.float32)
    dst = np.array([[0, -a * H], [W, top], [W, top + far], [0, H + b * H]], np.float32)
    return cv2.getPerspectiveTransform(src, dst).astype(np.float64)


def render_shelf(rng: np.random.Generator, bank: ProductBank, size: int,
                 oblique: float = 0.0, cooler: float = 0.0, rows: RowStyle = RowStyle()
                 ) -> ShelfScene:
    """A ``size`` x ``size`` crop of a densely stocked shelf with its product boxes, seen
    along the aisle with probability ``oblique``, behind a cooler's glass doors with
    probability ``cooler``, its rows drawn as ``rows`` says."""
    W = H = size
    canvas = _background(rng, W, H, bank)
    owner = np.full((H, W), -1, np.int32)
    boxes: list[tuple[int, int, int, int]] = []
    # The fixture: usually the whole frame, sometimes with store around it.
    fx0 = 0 if rng.random() < 0.7 else int(rng.integers(0, W // 4))
    fx1 = W if rng.random() < 0.7 else W - int(rng.integers(0, W // 4))
    fy0 = 0 if rng.random() < 0.5 else int(rng.integers(0, H // 2))
    fy1 = H if rng.random() < 0.6 else H - int(rng.integers(0, H // 4))
    back = rng.integers(10, 120, 3)
    canvas[fy0:fy1, fx0:fx1] = back.astype(np.uint8)
    board_colour = rng.integers(150, 256, 3) if rng.random() < 0.7 else rng.integers(0, 256, 3)
    mean_row = size * rng.uniform(0.08, 0.35)
    labelled: list[tuple[int, int, int, int]] = []  # shelf edges labelled once rows stand
    y = fy0 - int(rng.uniform(0, mean_row))
    while y < fy1:
        row_h = int(max(14, mean_row * rng.uniform(0.8, 1.25)))
        board = max(3, int(row_h * rng.uniform(0.08, 0.22)))
        base = y + row_h
        shadow = np.linspace(0.55, 1.0, max(1, row_h))[:, None, None]
        ys, ye = max(y, fy0), min(base, fy1)
        if ye > ys:
            canvas[ys:ye, fx0:fx1] = (canvas[ys:ye, fx0:fx1].astype(np.float32)
                                      * shadow[ys - y:ye - y]).astype(np.uint8)
        if _chance(rng, rows.pegs):
            _pegboard(rng, bank, canvas, owner, boxes, fx0, fx1, y, base)
        else:
            _fill_row(rng, bank, canvas, owner, boxes, fx0, fx1, base, row_h, rows)
        by0, by1 = max(base, 0), min(base + board, H)
        if by1 > by0:
            canvas[by0:by1, fx0:fx1] = board_colour.astype(np.uint8)
            owner[by0:by1, fx0:fx1] = -1
            if rng.random() < 0.85:
                if _chance(rng, rows.price_labels):
                    labelled.append((fx0, fx1, base + 1, board))
                else:
                    _price_tags(rng, canvas, fx0, fx1, base + 1, max(2, board - 2))
        y = base + board
    for x0, x1, top, board in labelled:
        _price_labels(rng, canvas, owner, x0, x1, top, board)
    behind_glass = rng.random() < cooler
    if behind_glass:
        _cooler_doors(rng, canvas, owner)
    for _ in range(int(rng.poisson(0.4))):
        _sign(rng, canvas, owner)
    # Frame edges, boards and signs hide what they cover: keep products that still show.
    visible = np.bincount(owner[owner >= 0].ravel(), minlength=len(boxes))
    kept = []
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, W), min(y2, H)
        if cx2 <= cx1 or cy2 <= cy1 or visible[i] < 0.35 * (x2 - x1) * (y2 - y1):
            continue
        kept.append((float(cx1), float(cy1), float(cx2), float(cy2)))
    out_boxes = np.array(kept, np.float32).reshape(-1, 4)
    if behind_glass and rng.random() < 0.8:
        canvas = _glare(rng, canvas)
    # The camera: a view not square to the shelf, then optics, sensor and JPEG.
    if rng.random() < oblique:
        # What the fixture no longer covers is the store: ceiling, floor, the aisle beyond.
        Hm = _oblique(rng, W, H)
        warped = _background(rng, W, H, bank)
        cv2.warpPerspective(canvas, Hm, (W, H), dst=warped, borderMode=cv2.BORDER_TRANSPARENT)
    else:
        Hm = _view(rng, W, H, float(rng.uniform(0.0, 0.08)))
        warped = np.asarray(cv2.warpPerspective(canvas, Hm, (W, H),
                                                borderMode=cv2.BORDER_REFLECT), np.uint8)
    out_boxes = _warp_boxes(Hm, out_boxes, W, H)
    image = apply_effects(warped, draw_effects(rng, 0.8), rng)
    if rng.random() < 0.7:
        q = int(rng.integers(45, 96))
        enc = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])[1]
        image = np.asarray(cv2.imdecode(enc, cv2.IMREAD_COLOR), np.uint8)
    return ShelfScene(normalize_lighting(image), out_boxes)


def _warp_boxes(Hm: npt.NDArray[np.float64], boxes: npt.NDArray[np.float32], W: int, H: int
                ) -> npt.NDArray[np.float32]:
    if len(boxes) == 0:
        return boxes
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x2, y2], 1),
                        np.stack([x1, y2], 1)], 1).reshape(-1, 1, 2).astype(np.float64)
    p = cv2.perspectiveTransform(corners, Hm).reshape(-1, 4, 2)
    out = np.stack([p[:, :, 0].min(1), p[:, :, 1].min(1), p[:, :, 0].max(1),
                    p[:, :, 1].max(1)], 1)
    area = (out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1])
    clipped = np.clip(out, 0, [W, H, W, H])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (inside >= 0.4 * np.maximum(area, 1e-6)) & ((clipped[:, 2] - clipped[:, 0]) >= 3) \
        & ((clipped[:, 3] - clipped[:, 1]) >= 3)
    return np.asarray(clipped[keep], np.float32)
