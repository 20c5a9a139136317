"""The SKU catalog and its packshots, drawn procedurally so nothing is downloaded.

Every SKU has a distinct look (shape, size, body and band colours, band position, brand text,
barcode stripes). Some pairs are deliberate look-alikes: same brand and body, another band colour
or size, as variants of one product line are in stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
import numpy.typing as npt

Colour = tuple[int, int, int]  # BGR
UNKNOWN_SKU = "unknown"
PACKSHOT_HEIGHT = 160  # pixels of the cached master packshot; scenes resize from it


@dataclass(frozen=True)
class Sku:
    """One stock-keeping unit as it looks on a shelf."""

    sku_id: str
    brand: str
    shape: str  # box | bottle | can | pouch
    width_cm: float
    height_cm: float
    body: Colour
    band: Colour
    band_pos: float  # vertical centre of the label band, 0 top .. 1 bottom
    text: Colour
    barcode_seed: int


def _sku(i: int, brand: str, shape: str, w: float, h: float, body: Colour, band: Colour,
         band_pos: float, text: Colour = (255, 255, 255)) -> Sku:
    return Sku(f"SKU-{i:03d}", brand, shape, w, h, body, band, band_pos, text, 7919 * i)


# Colours are BGR. Look-alike pairs: 1/2, 5/6, 9/10, 13/14, 19/20, 23/24.
CATALOG: tuple[Sku, ...] = (
    _sku(1, "AQUA", "bottle", 7.0, 24.0, (200, 140, 40), (255, 255, 255), 0.55, (160, 60, 0)),
    _sku(2, "AQUA", "bottle", 7.0, 24.0, (200, 140, 40), (40, 40, 220), 0.55),
    _sku(3, "FIZZ", "can", 6.5, 12.0, (30, 30, 200), (255, 255, 255), 0.45, (30, 30, 200)),
    _sku(4, "FIZZ", "can", 6.5, 12.0, (30, 30, 30), (40, 200, 240), 0.45),
    _sku(5, "CRUNCH", "box", 11.0, 21.0, (20, 180, 240), (30, 60, 160), 0.35),
    _sku(6, "CRUNCH", "box", 11.0, 21.0, (20, 180, 240), (60, 140, 20), 0.35),
    _sku(7, "OATY", "box", 13.0, 18.0, (90, 170, 210), (40, 90, 140), 0.6),
    _sku(8, "MUESLI", "pouch", 12.0, 20.0, (220, 220, 230), (50, 120, 50), 0.7, (20, 20, 20)),
    _sku(9, "PASTA", "box", 9.0, 16.0, (160, 40, 20), (240, 240, 240), 0.3, (160, 40, 20)),
    _sku(10, "PASTA", "box", 9.0, 16.0, (160, 40, 20), (40, 200, 240), 0.3, (20, 20, 20)),
    _sku(11, "RICE", "pouch", 12.0, 17.0, (245, 245, 245), (40, 40, 160), 0.5),
    _sku(12, "SAUCE", "bottle", 6.0, 19.0, (30, 30, 150), (100, 210, 230), 0.6, (20, 20, 20)),
    _sku(13, "SHINE", "bottle", 8.0, 22.0, (180, 80, 160), (255, 255, 255), 0.5, (120, 30, 100)),
    _sku(14, "SHINE", "bottle", 8.0, 26.0, (180, 80, 160), (255, 255, 255), 0.5, (120, 30, 100)),
    _sku(15, "CLEAN", "bottle", 9.0, 27.0, (60, 200, 60), (240, 240, 40), 0.4, (20, 20, 20)),
    _sku(16, "SOAP", "box", 8.0, 6.0, (230, 200, 140), (160, 60, 20), 0.5),
    _sku(17, "TEA", "box", 14.0, 8.0, (40, 100, 40), (130, 200, 230), 0.5, (20, 20, 20)),
    _sku(18, "COFFEE", "pouch", 11.0, 18.0, (30, 50, 80), (80, 160, 220), 0.4),
    _sku(19, "CHOCO", "box", 15.0, 7.0, (30, 50, 110), (200, 200, 240), 0.5, (30, 50, 110)),
    _sku(20, "CHOCO", "box", 15.0, 7.0, (30, 50, 110), (60, 220, 120), 0.5, (20, 20, 20)),
    _sku(21, "CHIPS", "pouch", 14.0, 22.0, (40, 210, 250), (30, 30, 200), 0.3),
    _sku(22, "NUTS", "can", 8.0, 10.0, (80, 80, 80), (40, 160, 240), 0.5),
    _sku(23, "JUICE", "box", 7.5, 20.0, (40, 140, 250), (40, 180, 60), 0.25),
    _sku(24, "JUICE", "box", 7.5, 20.0, (40, 140, 250), (180, 60, 120), 0.25),
    _sku(25, "MILK", "box", 7.5, 19.5, (250, 250, 250), (200, 120, 30), 0.65, (20, 20, 20)),
    _sku(26, "YOGO", "can", 7.0, 9.0, (230, 180, 230), (140, 40, 140), 0.5),
)
SKU_IDS: tuple[str, ...] = tuple(s.sku_id for s in CATALOG)
LABELS: tuple[str, ...] = (*SKU_IDS, UNKNOWN_SKU)  # detector class index -> SKU id
BY_ID: dict[str, Sku] = {s.sku_id: s for s in CATALOG}


def _shape_mask(shape: str, w: int, h: int) -> npt.NDArray[np.uint8]:
    """Silhouette of a product of ``shape`` in a ``w`` x ``h`` frame, 255 inside."""
    mask = np.zeros((h, w), np.uint8)
    if shape == "bottle":
        neck_w, shoulder = max(2, w // 3), int(h * 0.22)
        cv2.rectangle(mask, ((w - neck_w) // 2, 0), ((w + neck_w) // 2, shoulder), 255, -1)
        pts = np.array([[(w - neck_w) // 2, shoulder], [(w + neck_w) // 2, shoulder],
                        [w - 1, int(h * 0.34)], [0, int(h * 0.34)]], np.int32)
        cv2.fillConvexPoly(mask, pts, 255)
        cv2.rectangle(mask, (0, int(h * 0.34)), (w - 1, h - 1), 255, -1)
    elif shape == "can":
        r = max(1, h // 14)
        cv2.rectangle(mask, (0, r), (w - 1, h - 1 - r), 255, -1)
        cv2.ellipse(mask, (w // 2, r), (w // 2, r), 0, 0, 360, 255, -1)
        cv2.ellipse(mask, (w // 2, h - 1 - r), (w // 2, r), 0, 0, 360, 255, -1)
    elif shape == "pouch":
        pts = np.array([[int(w * 0.06), 0], [w - 1 - int(w * 0.06), 0], [w - 1, h - 1],
                        [0, h - 1]], np.int32)
        cv2.fillConvexPoly(mask, pts, 255)
    else:
        mask[:] = 255
    return mask


def draw_packshot(sku: Sku, height: int = PACKSHOT_HEIGHT) -> tuple[
        npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Front view of ``sku``: BGR image ``(h, w, 3)`` and its alpha mask ``(h, w)``."""
    h = height
    w = max(8, round(height * sku.width_cm / sku.height_cm))
    img = np.empty((h, w, 3), np.uint8)
    img[:] = sku.body
    top = int(h * 0.34) if sku.shape == "bottle" else 0
    if sku.shape == "bottle":  # a cap in the band colour
        img[: int(h * 0.08)] = sku.band
    band_h = max(3, int((h - top) * 0.22))
    cy = top + int((h - top) * sku.band_pos)
    y0, y1 = max(top, cy - band_h // 2), min(h, cy + band_h // 2)
    img[y0:y1] = sku.band
    # Brand text, fitted to the width.
    scale = 1.0
    (tw, th), _ = cv2.getTextSize(sku.brand, cv2.FONT_HERSHEY_DUPLEX, scale, 2)
    scale = min(0.9 * w / tw, 0.8 * band_h / th)
    (tw, th), _ = cv2.getTextSize(sku.brand, cv2.FONT_HERSHEY_DUPLEX, scale, 1)
    cv2.putText(img, sku.brand, ((w - tw) // 2, min(h - 2, y0 + (y1 - y0 + th) // 2)),
                cv2.FONT_HERSHEY_DUPLEX, scale, sku.text, max(1, round(scale * 1.5)), cv2.LINE_AA)
    # Barcode stripes, unique per SKU, near the bottom right.
    rng = np.random.default_rng(sku.barcode_seed)
    bw, bh = max(6, w // 3), max(4, h // 9)
    bx, by = w - bw - max(1, w // 12), h - bh - max(1, h // 20)
    img[by:by + bh, bx:bx + bw] = 255
    x = bx + 1
    while x < bx + bw - 1:
        sw = int(rng.integers(1, 3))
        if rng.random() < 0.55:
            img[by + 1:by + bh - 1, x:x + sw] = 0
        x += sw
    # Shading: a cylinder-like horizontal falloff for round packs, a flat sheen for boxes.
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)
    falloff = 1.0 - (0.35 if sku.shape in ("bottle", "can") else 0.12) * xs**2
    img = np.clip(img.astype(np.float32) * falloff[None, :, None], 0, 255).astype(np.uint8)
    return img, _shape_mask(sku.shape, w, h)


@cache
def packshot(sku_id: str) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Cached master packshot of a catalog SKU."""
    return draw_packshot(BY_ID[sku_id])


def random_unknown(rng: np.random.Generator) -> Sku:
    """A product that is not in the catalog (another retailer's or a new listing)."""
    letters = "ABDEGHKLMNPRSTVWXZ"
    brand = "".join(letters[int(i)] for i in rng.integers(0, len(letters), int(rng.integers(3, 6))))
    shape = ("box", "bottle", "can", "pouch")[int(rng.integers(0, 4))]
    w = float(rng.uniform(6, 14))
    h = float(rng.uniform(max(w * 0.6, 6), 26))

    def colour() -> Colour:
        c = rng.integers(0, 256, 3)
        return int(c[0]), int(c[1]), int(c[2])

    return Sku(UNKNOWN_SKU, brand, shape, w, h, colour(), colour(), float(rng.uniform(0.2, 0.8)),
               colour(), int(rng.integers(1, 1 << 30)))
