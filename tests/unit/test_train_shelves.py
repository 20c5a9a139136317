"""Training shelves: every product box lies inside the crop, seen square, along the aisle or
behind a cooler's glass doors; door frames hide what they cover; boxes lying down stack."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.packshot import Cutout
from pipeline.train.products import MASTER_HEIGHT, ProductBank
from pipeline.train.shelves import _cooler_doors, _fill_row, render_shelf

SIZE = 256


@pytest.fixture(scope="module")
def bank() -> ProductBank:
    rng = np.random.default_rng(0)
    packs = [Cutout(rng.integers(0, 256, (MASTER_HEIGHT, w, 3), np.uint8),
                    np.full((MASTER_HEIGHT, w), 255, np.uint8)) for w in (40, 90, 150)]
    textures = [rng.integers(0, 256, (120, 160, 3), np.uint8) for _ in range(4)]
    return ProductBank(packs, textures)


@pytest.mark.parametrize(("oblique", "cooler"), [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0),
                                                 (1.0, 1.0)])
@pytest.mark.parametrize("seed", [3, 4])
def test_scenes_keep_their_boxes_inside_the_crop(bank: ProductBank, oblique: float,
                                                 cooler: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(4):
        scene = render_shelf(rng, bank, SIZE, oblique, cooler)
        assert scene.image.shape == (SIZE, SIZE, 3)
        b = scene.boxes
        assert len(b) > 0
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert b.min() >= 0 and b.max() <= SIZE


@pytest.mark.parametrize("seed", range(6))
def test_cooler_door_frames_hide_the_products_behind_them(seed: int) -> None:
    canvas = np.zeros((SIZE, SIZE, 3), np.uint8)
    owner = np.zeros((SIZE, SIZE), np.int32)

    _cooler_doors(np.random.default_rng(seed), canvas, owner)

    hidden_columns = (owner == -1).all(axis=0)
    assert hidden_columns.any()  # at least one frame crosses the crop top to bottom
    assert (canvas[:, hidden_columns] > 0).any()  # drawn, not left as the shelf was
    assert (owner >= 0).mean() > 0.5  # the doors are mostly glass


@pytest.mark.parametrize(("flat_stacks", "widest", "stacked"), [(0.0, 3.6, False),
                                                               (1.0, 5.6, True)])
def test_boxes_lying_down_are_wide_and_stacked(bank: ProductBank, flat_stacks: float,
                                               widest: float, stacked: bool) -> None:
    rng = np.random.default_rng(1)
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(30):
        canvas = np.zeros((200, 2000, 3), np.uint8)
        owner = np.full((200, 2000), -1, np.int32)
        _fill_row(rng, bank, canvas, owner, boxes, 0, 2000, 190, 120, flat_stacks)

    b = np.array(boxes, np.float64)
    aspect = (b[:, 2] - b[:, 0]) / (b[:, 3] - b[:, 1])
    assert aspect.max() <= widest
    lying = b[aspect > 3.3]  # wider than any pack of the ordinary kinds
    assert (len(lying) > 0) is stacked
    if stacked:  # the same facing, one unit above the other
        same_x = (lying[:, None, 0] == lying[None, :, 0]) & (lying[:, None, 1] < lying[None, :, 1])
        assert same_x.any()
