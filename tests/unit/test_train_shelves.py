"""Training shelves: every product box lies inside the crop, seen square or along the aisle."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.packshot import Cutout
from pipeline.train.products import MASTER_HEIGHT, ProductBank
from pipeline.train.shelves import render_shelf

SIZE = 256


@pytest.fixture(scope="module")
def bank() -> ProductBank:
    rng = np.random.default_rng(0)
    packs = [Cutout(rng.integers(0, 256, (MASTER_HEIGHT, w, 3), np.uint8),
                    np.full((MASTER_HEIGHT, w), 255, np.uint8)) for w in (40, 90, 150)]
    textures = [rng.integers(0, 256, (120, 160, 3), np.uint8) for _ in range(4)]
    return ProductBank(packs, textures)


@pytest.mark.parametrize("oblique", [0.0, 1.0])
@pytest.mark.parametrize("seed", [3, 4])
def test_scenes_keep_their_boxes_inside_the_crop(bank: ProductBank, oblique: float,
                                                 seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(4):
        scene = render_shelf(rng, bank, SIZE, oblique)
        assert scene.image.shape == (SIZE, SIZE, 3)
        b = scene.boxes
        assert len(b) > 0
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert b.min() >= 0 and b.max() <= SIZE
