"""Render a realised planogram as an upright shelf photo with exact truth boxes."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.core.packshot import paste
from pipeline.synth.catalog import LABELS, UNKNOWN_SKU, Sku, draw_packshot, packshot
from pipeline.synth.planogram import Planogram, Realisation

Image = npt.NDArray[np.uint8]
BOARD_CM = 3.0
KICK_CM = 10.0


@dataclass(frozen=True)
class SceneObject:
    """One product in the upright photo: box in pixels ``[x1, y1, x2, y2]``."""

    box: tuple[float, float, float, float]
    sku: str
    label: int
    shelf: int
    position: int | None
    status: str

    def to_json(self) -> dict[str, object]:
        return {"box": [round(v, 2) for v in self.box], "sku": self.sku, "label": self.label,
                "shelf": self.shelf, "position": self.position, "status": self.status}


@dataclass(frozen=True)
class Scene:
    image: Image  # (H, W, 3) BGR, upright
    objects: tuple[SceneObject, ...]
    shelf_lines: tuple[tuple[float, float, float, float], ...]  # board top edge x1,y1,x2,y2
    homography: tuple[float, ...]


def frame_size(plan: Planogram, real: Realisation, long_side: int) -> tuple[int, int]:
    """Upright frame ``(w, h)``: landscape 4:3 for wide fixtures, portrait 3:4 for tall ones."""
    _, total_h = _fixture_height(plan, real)
    portrait = total_h / plan.width_cm > 0.95
    short = round(long_side * 3 / 4)
    return (short, long_side) if portrait else (long_side, short)


def _shelf_heights(real: Realisation, display: str) -> list[float]:
    clearance = 3.0 if display == "endcap" else 5.0
    out = []
    for slots in real.shelves:
        tallest = max((s.sku.height_cm for s in slots if s.sku is not None), default=15.0)
        out.append(max(tallest, 8.0) + clearance + BOARD_CM)
    return out


def _fixture_height(plan: Planogram, real: Realisation) -> tuple[float, float]:
    header = 22.0 if plan.display == "endcap" else 6.0
    return header, header + sum(_shelf_heights(real, plan.display)) + KICK_CM


def _sized_packshot(sku: Sku, w: int, h: int) -> tuple[Image, npt.NDArray[np.uint8]]:
    img, mask = packshot(sku.sku_id) if sku.sku_id != UNKNOWN_SKU else draw_packshot(sku)
    interp = cv2.INTER_AREA if h < img.shape[0] else cv2.INTER_LINEAR
    return (np.asarray(cv2.resize(img, (w, h), interpolation=interp), np.uint8),
            np.asarray(cv2.resize(mask, (w, h), interpolation=interp), np.uint8))


def render_scene(rng: np.random.Generator, plan: Planogram, real: Realisation,
                 size_wh: tuple[int, int]) -> Scene:
    """Draw wall, fixture, boards, products and clutter, then a perspective view of it all."""
    W, H = size_wh
    endcap = plan.display == "endcap"
    header_cm, total_cm = _fixture_height(plan, real)
    margin = rng.uniform(0.03, 0.09, 2)
    scale = min(W * (1 - 2 * margin[0]) / plan.width_cm, H * (1 - 2 * margin[1]) / total_cm)
    fx0 = (W - plan.width_cm * scale) * rng.uniform(0.35, 0.65)
    fy0 = (H - total_cm * scale) * rng.uniform(0.3, 0.7)

    def px(v: float) -> int:
        return int(round(v * scale))

    wall = rng.integers(150, 235, 3)
    canvas = np.empty((H, W, 3), np.uint8)
    canvas[:] = wall.astype(np.uint8)
    ramp = np.linspace(0.85, 1.05, H, dtype=np.float32)[:, None, None]
    canvas = np.clip(canvas * ramp, 0, 255).astype(np.uint8)
    floor_y = int(fy0 + px(total_cm))
    canvas[floor_y:] = (rng.integers(60, 120, 3)).astype(np.uint8)
    panel = tuple(int(c) for c in rng.integers(40, 200, 3))
    x0, x1 = int(fx0), int(fx0 + px(plan.width_cm))
    cv2.rectangle(canvas, (x0, int(fy0)), (x1, floor_y), panel, -1)
    board = tuple(int(c) for c in rng.integers(170, 245, 3))
    objects: list[SceneObject] = []
    lines: list[tuple[float, float, float, float]] = []

    if endcap:  # promotional header banner
        banner = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(canvas, (x0, int(fy0)), (x1, int(fy0 + px(header_cm * 0.9))), banner, -1)
        text = ("PROMO", "-30%", "2 FOR 1", "NEW", "SALE")[int(rng.integers(0, 5))]
        fs = px(header_cm) / 40.0
        cv2.putText(canvas, text, (x0 + px(5), int(fy0 + px(header_cm * 0.7))),
                    cv2.FONT_HERSHEY_DUPLEX, fs, (255, 255, 255), max(1, px(1.5)), cv2.LINE_AA)
    else:
        cv2.rectangle(canvas, (x0, int(fy0)), (x1, int(fy0 + px(header_cm))), board, -1)

    y = fy0 + px(header_cm)
    talkers: list[tuple[float, float]] = []
    for i, (slots, shelf_h) in enumerate(zip(real.shelves, _shelf_heights(real, plan.display),
                                             strict=True)):
        base = y + px(shelf_h - BOARD_CM)
        lines.append((float(x0), float(base), float(x1), float(base)))
        slack = plan.width_cm - sum(s.width_cm for s in slots)
        gap = min(0.6, max(0.0, slack / max(len(slots), 1)))
        xc = fx0 + px(rng.uniform(0, 0.5))
        for slot in slots:
            w_cm = slot.width_cm
            if slot.sku is not None:
                sku = slot.sku
                w, h = max(2, px(sku.width_cm)), max(2, px(sku.height_cm))
                jx = px(rng.uniform(0, gap))
                img, mask = _sized_packshot(sku, w, h)
                bx = int(xc + jx)
                by = int(base - h)
                paste(canvas, img, mask, bx, by)
                label = LABELS.index(sku.sku_id)
                objects.append(SceneObject((float(bx), float(by), float(bx + w), float(base)),
                                           sku.sku_id, label, i, slot.position, slot.status))
            xc += px(w_cm + gap)
        # The board and its price-tag strip.
        cv2.rectangle(canvas, (x0, int(base)), (x1, int(base + px(BOARD_CM))), board, -1)
        n_tags = int(rng.integers(3, 9))
        for tx in rng.uniform(x0, x1 - px(4), n_tags):
            cv2.rectangle(canvas, (int(tx), int(base + px(0.5))),
                          (int(tx + px(4)), int(base + px(2.5))), (250, 250, 250), -1)
            cv2.putText(canvas, f"{rng.integers(1, 20)}.{rng.integers(0, 99):02d}",
                        (int(tx + px(0.3)), int(base + px(2.2))), cv2.FONT_HERSHEY_SIMPLEX,
                        max(0.2, px(1) / 30), (0, 0, 0), 1, cv2.LINE_AA)
        if endcap:
            talkers.extend((float(t), base) for t in rng.uniform(x0, x1 - px(8), 2))
        y += px(shelf_h)
    cv2.rectangle(canvas, (x0, int(y)), (x1, floor_y), board, -1)
    for tx, ty in talkers:  # shelf talkers hang off the board edge in front of the shelf below
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(canvas, (int(tx), int(ty + px(BOARD_CM))),
                      (int(tx + px(7)), int(ty + px(BOARD_CM + 5))), colour, -1)
        cv2.putText(canvas, "%", (int(tx + px(2)), int(ty + px(BOARD_CM + 4))),
                    cv2.FONT_HERSHEY_DUPLEX, max(0.3, px(1) / 12), (255, 255, 255), 1)

    Hm = _view_homography(rng, W, H, 0.10 if endcap else 0.05)
    warped = cv2.warpPerspective(canvas, Hm, (W, H), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
    out_objects = [SceneObject(_warp_box(Hm, o.box), o.sku, o.label, o.shelf, o.position,
                               o.status) for o in objects]
    out_lines = []
    for lx1, ly1, lx2, ly2 in lines:
        p = cv2.perspectiveTransform(np.array([[[lx1, ly1], [lx2, ly2]]], np.float64), Hm)[0]
        out_lines.append((float(p[0, 0]), float(p[0, 1]), float(p[1, 0]), float(p[1, 1])))
    return Scene(np.asarray(warped, np.uint8), tuple(out_objects), tuple(out_lines),
                 tuple(float(v) for v in Hm.ravel()))


def _view_homography(rng: np.random.Generator, W: int, H: int, amount: float
                     ) -> npt.NDArray[np.float64]:
    """A camera not quite square to the fixture: corners pulled inwards, never out of frame."""
    src = np.array([[0, 0], [W, 0], [W, H], [0, H]], np.float32)
    jitter = rng.uniform(0, amount, (4, 2)) * np.array([W, H])
    if rng.random() < 0.5:  # seen from one side: that side shrinks vertically
        side = (0, 3) if rng.random() < 0.5 else (1, 2)
        jitter[side[0], 1] += amount * H
        jitter[side[1], 1] += amount * H
    sign = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    dst = (src + sign * jitter).astype(np.float32)
    return cv2.getPerspectiveTransform(src, dst).astype(np.float64)


def _warp_box(Hm: npt.NDArray[np.float64], box: tuple[float, float, float, float]
              ) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    pts = np.array([[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]], np.float64)
    p = cv2.perspectiveTransform(pts, Hm)[0]
    return (float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()),
            float(p[:, 1].max()))
