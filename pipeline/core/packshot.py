"""Packshots: a product photographed on a plain white backdrop, cut out from it."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Cutout:
    """A product's front: BGR ``(h, w, 3)`` and its alpha mask ``(h, w)``."""

    image: npt.NDArray[np.uint8]
    mask: npt.NDArray[np.uint8]

    @property
    def aspect(self) -> float:
        h, w = self.mask.shape
        return float(w) / max(1, int(h))


def paste(canvas: npt.NDArray[np.uint8], image: npt.NDArray[np.uint8],
          mask: npt.NDArray[np.uint8], x: int, y: int) -> None:
    """Alpha-blend ``image`` (with its 0-255 ``mask``) into ``canvas`` at ``(x, y)``, in place;
    the parts outside the canvas are left out."""
    h, w = mask.shape
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return
    m = mask[y0 - y:y1 - y, x0 - x:x1 - x, None].astype(np.uint16)
    src = image[y0 - y:y1 - y, x0 - x:x1 - x].astype(np.uint16)
    dst = canvas[y0:y1, x0:x1].astype(np.uint16)
    canvas[y0:y1, x0:x1] = ((src * m + dst * (255 - m)) // 255).astype(np.uint8)


def cut_out(image: npt.NDArray[np.uint8], *, white_level: int = 232, part_share: float = 0.02
            ) -> Cutout | None:
    """The product in a packshot shot on a white background, cropped to its extent.

    The mask keeps every pixel darker or more saturated than the backdrop, closed and filled
    from its outer contours. Where a product's own colour is the backdrop's (a white carton,
    a bottle's white cap), it shows as several parts (its shaded sides, its label): every
    part of at least ``part_share`` of the largest one's area is kept, so the extent, and the
    aspect ratio read from it, is the whole product's. ``None`` when almost nothing (or
    almost everything) is product.
    """
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    fg = ((image.min(axis=2) < white_level) | (hsv[:, :, 1] > 40)).astype(np.uint8) * 255
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    areas = [cv2.contourArea(c) for c in contours]
    parts = [c for c, a in zip(contours, areas, strict=True) if a >= part_share * max(areas)]
    mask = np.zeros_like(fg)
    cv2.drawContours(mask, parts, -1, 255, -1)
    if not 0.03 < cv2.contourArea(cv2.convexHull(np.concatenate(parts))) / fg.size < 0.97:
        return None
    # A reflection under a pack on a glossy table: drop the rows at the bottom that are far
    # narrower than the pack (a bottle's neck, at the top, stays). A row's width is its span,
    # first to last product pixel: a white pack's rows show only its shaded sides.
    inside = mask > 0
    filled = inside.any(axis=1)
    spans = np.where(filled, mask.shape[1] - inside[:, ::-1].argmax(axis=1)
                     - inside.argmax(axis=1), 0)
    cols = np.nonzero(inside.any(axis=0))[0]
    y0 = int(filled.argmax())
    y1 = int(np.nonzero(spans > 0.35 * spans.max())[0][-1]) + 1
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    return Cutout(np.ascontiguousarray(image[y0:y1, x0:x1]),
                  np.ascontiguousarray(mask[y0:y1, x0:x1]))
