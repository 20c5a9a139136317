"""Training targets: a centre peak per product, side distances from its central cells, and
box-loss weights that count each product once however many cells it covers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.train.data import STRIDE, targets

SIZE = 128


@pytest.mark.parametrize(("boxes", "spread"), [
    ([[10, 10, 26, 26], [40, 20, 120, 110]], 10.0),  # a small product and a large one
    ([[8, 8, 24, 40], [30, 8, 46, 40], [60, 100, 64, 104]], 1.5),  # one only 4 px across
], ids=["small-and-large", "three-products"])
def test_each_product_weighs_once_in_the_per_object_box_weights(
        boxes: list[list[float]], spread: float) -> None:
    b = np.array(boxes, np.float32)

    hm, dist, weight, per_object = targets(b, np.zeros(len(b), np.int64), SIZE, 1)

    assert (hm == 1.0).sum() == len(b)  # one peak each
    raw, once = [], []
    for x1, y1, x2, y2 in b:
        # the peak cell regresses the product's sides
        iy, ix = (int(v) for v in np.argwhere(hm[0] * _inside(x1, y1, x2, y2) == 1.0)[0])
        np.testing.assert_allclose(dist[:, iy, ix], [(ix + 0.5) * STRIDE - x1,
                                                     (iy + 0.5) * STRIDE - y1,
                                                     x2 - (ix + 0.5) * STRIDE,
                                                     y2 - (iy + 0.5) * STRIDE], rtol=1e-6)
        cells = _inside(x1, y1, x2, y2).astype(bool)
        raw.append(float(weight[cells].sum()))
        once.append(float(per_object[cells].sum()))
    # The cells' weights grow with the product's size; each product's per-object weights
    # sum to one, whatever its size
    assert max(raw) > spread * min(raw)
    np.testing.assert_allclose(once, 1.0, rtol=1e-5)
    assert ((per_object > 0) == (weight > 0)).all()


def _inside(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """Cells whose centres lie in the box or within a cell of it (a product under three
    cells across regresses from the 3 x 3 cells around its centre)."""
    c = (np.arange(SIZE // STRIDE) + 0.5) * STRIDE
    return ((c[:, None] > y1 - STRIDE) & (c[:, None] < y2 + STRIDE) & (c[None, :] > x1 - STRIDE)
            & (c[None, :] < x2 + STRIDE)).astype(np.float32)


def test_no_product_no_weight() -> None:
    hm, dist, weight, per_object = targets(np.zeros((0, 4), np.float32),
                                           np.zeros(0, np.int64), SIZE, 1)

    assert not hm.any() and not dist.any() and not weight.any() and not per_object.any()
