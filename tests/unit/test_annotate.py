"""The report's annotated photo: each box in its own status colour, gaps shaded."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analytics.page import GAP_COLOUR, STATUS_COLOURS, annotate
from pipeline.core.result import PhotoResult

BOXES = {"in_place": [20, 20, 80, 100], "extra": [100, 20, 160, 100],
         "misplaced": [180, 20, 240, 100], "unknown": [260, 20, 320, 100],
         "off_shelf": [340, 20, 400, 100]}


def result() -> PhotoResult:
    return PhotoResult.model_validate({
        "sha256": "f" * 64, "upload_id": "u", "store": "S", "aisle": "A", "bay": "B",
        "camera": "c", "date": "2026-11-24", "store_format": "standard",
        "display_type": "gondola", "source": {"bucket": "b", "key": "k"}, "detections": 5,
        "compliance": 0.5, "completed_at": "2026-11-24T10:00:00",
        "items": [{"box": box, "sku": "X", "score": 0.9, "status": status}
                  for status, box in BOXES.items()],
        "gaps": [{"box": [20, 140, 200, 220], "shelf": 1, "position": 0, "sku": "Y"}]})


@pytest.mark.parametrize("status", list(BOXES))
def test_each_box_is_drawn_in_its_status_colour(status: str) -> None:
    image = np.full((240, 420, 3), 235, np.uint8)

    out = annotate(image, result())

    x1, y1, x2, _ = BOXES[status]
    edge = out[y1, x1 + 5:x2 - 5]  # the top edge, away from the corners
    assert (edge == np.array(STATUS_COLOURS[status], np.uint8)).all()
    assert (out[y1 + 20, x1 + 20] == 235).all()  # inside stays the photo


def test_gap_is_shaded_and_outlined() -> None:
    image = np.full((240, 420, 3), 235, np.uint8)

    out = annotate(image, result())

    assert (out[140, 60] == np.array(GAP_COLOUR, np.uint8)).all()
    inside = out[180, 100].astype(int)
    expected = (0.45 * np.array(GAP_COLOUR) + 0.55 * 235).round().astype(int)
    assert np.abs(inside - expected).max() <= 1
    assert len({tuple(c) for c in STATUS_COLOURS.values()} | {GAP_COLOUR}) == 6
