"""Overlapping tiles for dense displays, and merging their detections back together."""

from __future__ import annotations

import numpy as np

from pipeline.core.detections import Detections, nms


def tile_windows(*, size_wh: tuple[int, int], grid: tuple[int, int], overlap: float
                 ) -> list[tuple[int, int, int, int]]:
    """``grid`` = (columns, rows) windows ``(x1, y1, x2, y2)`` covering the image, each pair of
    neighbours sharing ``overlap`` of a window's extent."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    w, h = size_wh
    cols, rows = grid

    def spans(total: int, n: int) -> list[tuple[int, int]]:
        if n <= 1:
            return [(0, total)]
        length = total / (n - (n - 1) * overlap)
        step = length * (1 - overlap)
        return [(round(i * step), min(total, round(i * step + length))) for i in range(n)]

    return [(x1, y1, x2, y2) for y1, y2 in spans(h, rows) for x1, x2 in spans(w, cols)]


def strip_grid(size_wh: tuple[int, int], *, max_aspect: float = 2.0) -> tuple[int, int] | None:
    """``(columns, rows)`` of windows along a photo longer than ``max_aspect`` times its
    short side (a wide bay, a panorama), each about 1.5 times as long as the short side;
    None for any other photo. Letterboxed whole into a square input, such a photo would
    leave its products a few pixels tall."""
    w, h = size_wh
    short, long = min(w, h), max(w, h)
    if long <= max_aspect * short:
        return None
    n = int(np.ceil(long / (1.5 * short)))
    return (n, 1) if w >= h else (1, n)


def merge_tiles(parts: list[tuple[tuple[int, int, int, int], Detections]], *,
                iou_threshold: float, containment_threshold: float = 0.8) -> Detections:
    """Shift each tile's detections by its window and fuse duplicates across tiles.

    Plain IoU NMS removes duplicates seen whole twice; intersection over the smaller box then
    removes the fragments a tile border cut out of an object seen whole elsewhere.
    """
    shifted = []
    for (x1, y1, _, _), det in parts:
        offset = np.array([x1, y1, x1, y1], np.float32)
        shifted.append(Detections(det.xyxy + offset, det.scores, det.class_ids))
    allp = Detections.concat(shifted)
    allp = allp.take(nms(xyxy=allp.xyxy, scores=allp.scores, class_ids=allp.class_ids,
                         iou_threshold=iou_threshold))
    # Fragments: prefer the larger box when one sits inside another of the same class.
    area = (allp.xyxy[:, 2] - allp.xyxy[:, 0]) * (allp.xyxy[:, 3] - allp.xyxy[:, 1])
    keep = nms(xyxy=allp.xyxy, scores=area, class_ids=allp.class_ids,
               iou_threshold=containment_threshold, use_min_area=True)
    return allp.take(np.sort(keep))
