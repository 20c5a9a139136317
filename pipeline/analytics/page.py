"""``shelf report``: one static HTML page per store and day for category managers.

Annotated photos (boxes coloured by status, out-of-stock gaps shaded), per-shelf compliance
bars, and aisle and store tables. Images are embedded, so the page is a single file.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.core.result import PhotoResult
from pipeline.core.rollup import latest_per_bay, rollups
from pipeline.settings import Settings
from pipeline.storage.s3 import ObjectStore

# BGR for drawing, and the same colours as CSS for the legend.
STATUS_COLOURS: dict[str, tuple[int, int, int]] = {
    "in_place": (60, 180, 60),
    "extra": (200, 160, 40),
    "misplaced": (0, 140, 255),
    "unknown": (200, 40, 200),
    "off_shelf": (120, 120, 120),
}
GAP_COLOUR = (40, 40, 230)


def _css(bgr: tuple[int, int, int]) -> str:
    b, g, r = bgr
    return f"rgb({r},{g},{b})"


def annotate(image: npt.NDArray[np.uint8], result: PhotoResult) -> npt.NDArray[np.uint8]:
    """Boxes by status and shaded gaps, drawn on a copy of ``image`` (BGR)."""
    out = image.copy()
    overlay = out.copy()
    thick = max(2, round(max(out.shape[:2]) / 400))
    for gap in result.gaps:
        x1, y1, x2, y2 = (int(round(v)) for v in gap.box)
        cv2.rectangle(overlay, (x1, y1), (x2, y2), GAP_COLOUR, -1)
    out = np.asarray(cv2.addWeighted(overlay, 0.45, out, 0.55, 0), np.uint8)
    for gap in result.gaps:
        x1, y1, x2, y2 = (int(round(v)) for v in gap.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), GAP_COLOUR, thick)
    for det in result.items:
        x1, y1, x2, y2 = (int(round(v)) for v in det.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), STATUS_COLOURS[det.status], thick)
    return np.asarray(out, np.uint8)


def _img_tag(image: npt.NDArray[np.uint8], alt: str) -> str:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    data = base64.b64encode(buf.tobytes()).decode() if ok else ""
    return f'<img alt="{html.escape(alt)}" src="data:image/jpeg;base64,{data}">'


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _bar(v: float | None) -> str:
    width = 0.0 if v is None else max(0.0, min(1.0, v)) * 100
    cls = "good" if v is not None and v >= 0.9 else "warn" if v is not None and v >= 0.7 \
        else "bad"
    return (f'<div class="bar"><div class="fill {cls}" style="width:{width:.1f}%"></div>'
            f"<span>{_pct(v)}</span></div>")


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in cols)
    body = []
    for r in rows:
        cells = []
        for key, _ in cols:
            v = r.get(key)
            cells.append(f"<td>{_bar(v) if key == 'compliance' else html.escape(str(v))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


CSS = """
body{font-family:sans-serif;margin:24px;background:#fafafa;color:#222}
h1{margin:0 0 4px}h2{margin-top:32px}
table{border-collapse:collapse;margin:8px 0;background:#fff}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:left}
.bar{position:relative;width:220px;height:18px;background:#eee;border-radius:3px}
.bar span{position:absolute;left:6px;top:1px;font-size:12px}
.fill{height:100%;border-radius:3px}.good{background:#3cb43c}.warn{background:#f0b400}
.bad{background:#e63c3c}
.photo{display:flex;gap:20px;align-items:flex-start;margin:16px 0;padding:12px;background:#fff;
border:1px solid #ddd}.photo img{max-width:640px;max-height:640px}
.legend span{display:inline-block;margin-right:16px}
.swatch{display:inline-block;width:14px;height:14px;margin-right:4px;vertical-align:middle}
"""


def build_report(store_obj: ObjectStore, settings: Settings, *, store: str, date: str) -> str:
    """Read the store's results of ``date`` and their normalized images, render the page."""
    from pipeline.analytics.aggregates import read_results
    from pipeline.image import decode_jpeg
    from pipeline.storage.keys import artifact_key, partition_value

    prefix = f"compliance/store={partition_value(store)}/date={date}/"
    results = read_results(store_obj, settings.s3.results_bucket, prefix)
    images = {r.sha256: decode_jpeg(store_obj.get_bytes(
        settings.s3.artifacts_bucket, artifact_key(r.sha256, "normalized.jpg")))
        for r in latest_per_bay(results)}
    return render_report(store=store, date=date, results=results, images=images)


def render_report(*, store: str, date: str, results: list[PhotoResult],
                  images: Mapping[str, npt.NDArray[np.uint8]]) -> str:
    """The page for ``store`` on ``date``; ``images`` maps photo sha256 to its normalized image."""
    chosen = latest_per_bay(results)
    levels = rollups(chosen)
    legend = "".join(
        f'<span><i class="swatch" style="background:{_css(c)}"></i>{name.replace("_", " ")}'
        "</span>" for name, c in STATUS_COLOURS.items())
    legend += (f'<span><i class="swatch" style="background:{_css(GAP_COLOUR)}"></i>'
               "out-of-stock gap</span>")
    parts = [f"<h1>Shelf compliance: store {html.escape(store)}</h1>",
             f"<p>{html.escape(date)}: {len(chosen)} bays photographed</p>",
             "<h2>Store</h2>",
             _table(levels["store"], [("store", "store"), ("bays", "bays"),
                                      ("shelves", "shelves"), ("compliance", "compliance"),
                                      ("out_of_stock", "out-of-stock positions")]),
             "<h2>Aisles</h2>",
             _table(levels["aisle"], [("aisle", "aisle"), ("bays", "bays"),
                                      ("shelves", "shelves"), ("compliance", "compliance"),
                                      ("out_of_stock", "out-of-stock positions")]),
             "<h2>Photos</h2>", f'<p class="legend">{legend}</p>']
    for r in chosen:
        shelves = [{"shelf": sh.index, "compliance": sh.compliance,
                    "out_of_stock": ", ".join(sh.out_of_stock) or "-"} for sh in r.shelves]
        img = images.get(r.sha256)
        pic = _img_tag(annotate(img, r), f"bay {r.bay}") if img is not None else ""
        overall = (_pct(r.compliance) if r.compliance is not None
                   else html.escape(r.compliance_reason or "no planogram"))
        parts.append(
            f'<div class="photo">{pic}<div><h3>aisle {html.escape(r.aisle)}, bay '
            f'{html.escape(r.bay)}</h3><p>overall {overall}, '
            f'model {html.escape(str(r.model))}</p>'
            + _table(shelves, [("shelf", "shelf"), ("compliance", "compliance"),
                               ("out_of_stock", "out of stock")]) + "</div></div>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Store {html.escape(store)}"
            f" {html.escape(date)}</title><style>{CSS}</style></head><body>{''.join(parts)}"
            "</body></html>")
