"""Training batches rendered on the fly, with CenterNet targets."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pipeline.synth.planogram import DISPLAYS
from pipeline.synth.world import make_sample
from pipeline.train.products import ProductBank
from pipeline.train.recipe import Recipe
from pipeline.train.shelves import render_shelf

PAD_VALUE = 114
STRIDE = 4  # the detector's output stride: a heatmap cell is 4 x 4 input pixels


def random_crop(rng: np.random.Generator, image: npt.NDArray[np.uint8],
                boxes: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], size: int
                ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """A ``size`` x ``size`` window; boxes clipped, those less than 40 % inside dropped."""
    h, w = image.shape[:2]
    out = np.full((size, size, 3), PAD_VALUE, np.uint8)
    x0 = int(rng.integers(0, max(1, w - size + 1)))
    y0 = int(rng.integers(0, max(1, h - size + 1)))
    win = image[y0:y0 + size, x0:x0 + size]
    out[:win.shape[0], :win.shape[1]] = win
    b = boxes - np.array([x0, y0, x0, y0], np.float32)
    clipped = np.clip(b, 0, [min(size, w - x0), min(size, h - y0)] * 2)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = inside >= 0.4 * np.maximum(area, 1e-6)
    return out, clipped[keep], labels[keep]


def targets(boxes: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], size: int,
            num_classes: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32],
                                       npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Heatmap ``(C, S, S)``, side distances ``(4, S, S)`` and their weights ``(S, S)``, the
    weights also divided by their object's total ``(S, S)`` (each object counts once)."""
    s = size // STRIDE
    hm = np.zeros((num_classes, s, s), np.float32)
    dist = np.zeros((4, s, s), np.float32)
    weight = np.zeros((s, s), np.float32)
    owner = np.full((s, s), -1, np.int64)
    centres = (np.arange(s, dtype=np.float32) + 0.5) * STRIDE
    for obj, ((x1, y1, x2, y2), c) in enumerate(zip(boxes, labels, strict=True)):
        cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
        sx = max(0.7, (x2 - x1) / STRIDE / 6)
        sy = max(0.7, (y2 - y1) / STRIDE / 6)
        ix, iy = min(int(cx), s - 1), min(int(cy), s - 1)
        rx, ry = int(3 * sx) + 1, int(3 * sy) + 1
        xa, xb = max(0, ix - rx), min(s, ix + rx + 1)
        ya, yb = max(0, iy - ry), min(s, iy + ry + 1)
        gx = np.exp(-((np.arange(xa, xb) + 0.5 - cx) ** 2) / (2 * sx**2))
        gy = np.exp(-((np.arange(ya, yb) + 0.5 - cy) ** 2) / (2 * sy**2))
        g = (gy[:, None] * gx[None, :]).astype(np.float32)
        hm[c, ya:yb, xa:xb] = np.maximum(hm[c, ya:yb, xa:xb], g)
        hm[c, iy, ix] = 1.0
        # Regress the sides from the central cells, weighted by closeness to the centre.
        bx = max(1, round((x2 - x1) / STRIDE * 0.2))
        by = max(1, round((y2 - y1) / STRIDE * 0.2))
        xa2, xb2 = max(0, ix - bx), min(s, ix + bx + 1)
        ya2, yb2 = max(0, iy - by), min(s, iy + by + 1)
        px = centres[xa2:xb2][None, :]
        py = centres[ya2:yb2][:, None]
        sub = g[ya2 - ya:yb2 - ya, xa2 - xa:xb2 - xa]
        better = sub > weight[ya2:yb2, xa2:xb2]
        for k, v in enumerate((px - x1 + 0 * py, py - y1 + 0 * px, x2 - px + 0 * py,
                               y2 - py + 0 * px)):
            dist[k, ya2:yb2, xa2:xb2] = np.where(better, v, dist[k, ya2:yb2, xa2:xb2])
        weight[ya2:yb2, xa2:xb2] = np.where(better, sub, weight[ya2:yb2, xa2:xb2])
        owner[ya2:yb2, xa2:xb2] = np.where(better, obj, owner[ya2:yb2, xa2:xb2])
    per_object = np.zeros_like(weight)
    held = owner >= 0
    if held.any():
        totals = np.bincount(owner[held], weights=weight[held], minlength=len(boxes))
        per_object[held] = weight[held] / totals[owner[held]]
    return hm, dist, weight, per_object


Example = tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32], npt.NDArray[np.float32],
                npt.NDArray[np.float32], npt.NDArray[np.float32]]


def make_example(rng: np.random.Generator, recipe: Recipe, bank: ProductBank) -> Example:
    """One image ``(3, S, S)`` RGB uint8 and its class-agnostic targets: a dense shelf cut
    and pasted from real product imagery, or (a share of them) a synthetic world photo."""
    if rng.random() < recipe.synthetic_share:
        display = DISPLAYS[int(rng.integers(len(DISPLAYS)))]
        long_side = int(rng.uniform(*recipe.synthetic_long_side))
        sample = make_sample(rng, display, long_side)
        img, boxes, _ = random_crop(rng, sample.image, sample.boxes, sample.labels,
                                    recipe.crop)
    else:
        scene = render_shelf(rng, bank, recipe.crop, recipe.oblique_share,
                             recipe.cooler_share, recipe.rows)
        img, boxes = scene.image, scene.boxes
    if rng.random() < 0.5:  # mirror: shelves read the same either way
        img = img[:, ::-1]
        boxes = boxes[:, [2, 1, 0, 3]] * np.array([-1, 1, -1, 1], np.float32) \
            + np.array([recipe.crop, 0, recipe.crop, 0], np.float32)
    hm, dist, w, w_obj = targets(boxes, np.zeros(len(boxes), np.int64), recipe.crop, 1)
    return np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)), hm, dist, w, w_obj
