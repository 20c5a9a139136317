"""The HTML report, rendered by headless Chromium and checked as a picture."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.analytics.page import GAP_COLOUR, STATUS_COLOURS, render_report
from pipeline.core.result import PhotoResult

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _shelf_image() -> np.ndarray:
    img = np.full((480, 640, 3), 235, np.uint8)
    for y in (150, 300, 450):
        cv2.rectangle(img, (20, y), (620, y + 10), (205, 205, 205), -1)
    return img


def _share(png: np.ndarray, bgr: tuple[int, int, int], tol: int = 30) -> float:
    diff = np.abs(png.astype(np.int16) - np.array(bgr, np.int16)).max(axis=2)
    return float((diff <= tol).mean())


def test_report_renders_boxes_gaps_bars_and_tables(tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: `apt-get install chromium` (make test does it)")
    # Given one bay with in-place, misplaced, unknown and extra products and a gap
    result = PhotoResult.model_validate({
        "sha256": "f" * 64, "upload_id": "u1", "store": "S001", "aisle": "A01", "bay": "B1",
        "camera": "c1", "date": "2026-11-24", "compliance": 0.5, "model": "product-light/1",
        "store_format": "standard", "display_type": "gondola", "detections": 5,
        "source": {"bucket": "shelf-raw", "key": "raw/S001/A01/B1/c1/x.jpg"},
        "completed_at": "2026-11-24T10:00:00",
        "shelves": [{"index": 0, "planned_facings": 4, "found_facings": 2, "compliance": 0.5,
                     "detections": 5, "out_of_stock": ["SKU-003"]}],
        "items": [{"box": [30, 40, 130, 148], "sku": "SKU-001", "score": 0.9,
                   "status": "in_place"},
                  {"box": [140, 40, 240, 148], "sku": "SKU-002", "score": 0.9,
                   "status": "misplaced"},
                  {"box": [250, 40, 350, 148], "sku": "unknown", "score": 0.9,
                   "status": "unknown"},
                  {"box": [30, 200, 130, 298], "sku": "SKU-001", "score": 0.9,
                   "status": "extra"},
                  {"box": [200, 330, 300, 420], "sku": "SKU-002", "score": 0.9,
                   "status": "off_shelf"}],
        "gaps": [{"box": [380, 40, 600, 148], "shelf": 0, "position": 2, "sku": "SKU-003"}],
    })
    page = render_report(store="S001", date="2026-11-24", results=[result],
                         images={"f" * 64: _shelf_image()})
    html_path = tmp_path / "report.html"
    html_path.write_text(page)
    png_path = tmp_path / "shot.png"
    # When headless Chromium renders it
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
                    f"--screenshot={png_path}", "--window-size=1200,1400",
                    html_path.as_uri()], check=True, capture_output=True, timeout=120)
    shot = cv2.imread(str(png_path))
    assert shot is not None and shot.shape[:2] == (1400, 1200)
    # Then every status colour, the gap shading and the compliance bars are on screen
    for name, colour in STATUS_COLOURS.items():
        assert _share(shot, colour) > 0.0002, name
    assert _share(shot, GAP_COLOUR, tol=40) > 0.0002
    blend = tuple(int(0.45 * g + 0.55 * 235) for g in GAP_COLOUR)
    assert _share(shot, blend, tol=20) > 0.005  # the shaded gap area
    assert _share(shot, (60, 60, 230)) > 0.0003  # a red 50 % bar (css #e63c3c)
    assert _share(shot, (250, 250, 250), tol=6) > 0.3  # the page itself rendered
