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


def cut_out(image: npt.NDArray[np.uint8], *, white_level: int = 232) -> Cutout | None:
    """The product in a packshot shot on a white background, cropped to its extent.

    The mask keeps every pixel darker or more saturated than the backdrop, closed and filled
    from its outer contours; ``None`` when almost nothing (or almost everything) is product.
    """
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    fg = ((image.min(axis=2) < white_level) | (hsv[:, :, 1] > 40)).astype(np.uint8) * 255
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    big = max(contours, key=cv2.contourArea)
    area = cv2.contourArea(big)
    if not 0.03 < area / fg.size < 0.97:
        return None
    mask = np.zeros_like(fg)
    cv2.drawContours(mask, [big], -1, 255, -1)
    # Reflections under a pack on a glossy table: drop rows far narrower than the pack.
    widths = (mask > 0).sum(axis=1)
    rows = np.nonzero(widths > 0.35 * widths.max())[0]
    cols = np.nonzero((mask > 0).any(axis=0))[0]
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return Cutout(np.ascontiguousarray(image[y0:y1, x0:x1]),
                  np.ascontiguousarray(mask[y0:y1, x0:x1]))


