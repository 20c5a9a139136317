"""The synthetic world's SKUs enrolled through the same catalog path as any retailer's."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.core.packshot import Cutout
from pipeline.detect.recognizer import Recognizer
from pipeline.synth.catalog import CATALOG, Sku, draw_packshot

PACKSHOT_HEIGHT = 240


def packshot_png(sku: Sku, height: int = PACKSHOT_HEIGHT) -> bytes:
    """The SKU's front on a white backdrop, as a catalog photo would show it."""
    img, mask = draw_packshot(sku, height)
    white = on_white(Cutout(img, mask))
    pad = height // 10
    framed = cv2.copyMakeBorder(white, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                                value=(255, 255, 255))
    ok, buf = cv2.imencode(".png", framed)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return bytes(buf.tobytes())


def on_white(cut: Cutout) -> npt.NDArray[np.uint8]:
    a = cut.mask[:, :, None].astype(np.float32) / 255.0
    return np.asarray(cut.image * a + 255.0 * (1 - a), np.uint8)


def catalog_packshots() -> list[tuple[str, str, bytes]]:
    """(SKU id, brand, PNG packshot) of every synthetic SKU."""
    return [(sku.sku_id, sku.brand, packshot_png(sku)) for sku in CATALOG]


def catalog_sizes() -> dict[str, tuple[float, float]]:
    """The front of every synthetic SKU, width and height in cm, as its product data gives
    it to the catalog."""
    return {sku.sku_id: (sku.width_cm, sku.height_cm) for sku in CATALOG}


def catalog_images() -> list[tuple[str, npt.NDArray[np.uint8]]]:
    """(SKU id, packshot pixels) of every synthetic SKU."""
    return [(sku.sku_id, np.asarray(cv2.imdecode(np.frombuffer(packshot_png(sku), np.uint8),
                                                 cv2.IMREAD_COLOR), np.uint8))
            for sku in CATALOG]


def enrol_catalog(recognizer: Recognizer) -> int:
    """Add every synthetic SKU to the catalog through ``recognizer``; returns the count."""
    sizes = catalog_sizes()
    for sku, brand, png in catalog_packshots():
        recognizer.enrol(sku, [(f"{sku}.png", png)], brand=brand, name=None,
                         size_cm=sizes[sku])
    return len(CATALOG)
