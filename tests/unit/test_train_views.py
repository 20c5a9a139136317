"""Embedder training views: some in-store views are seen as small as a shelf photo shows them."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.lighting import resize_long_side
from pipeline.core.packshot import Cutout
from pipeline.train import views
from pipeline.train.views import Identity, in_store_view


@pytest.mark.parametrize(("shape", "long_side", "expected"), [
    ((300, 200, 3), 40.0, (40, 27, 3)),   # tall: the height becomes the long side
    ((100, 400, 3), 20.0, (5, 20, 3)),    # wide
    ((30, 20, 3), 72.0, (30, 20, 3)),     # already smaller: as it is
    ((400, 3, 3), 20.0, (20, 2, 3)),      # never under two pixels across
])
def test_a_far_view_shrinks_to_the_long_side(shape: tuple[int, int, int], long_side: float,
                                            expected: tuple[int, int, int]) -> None:
    # as in_store_view shrinks a far view
    view = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
    assert resize_long_side(view, long_side, min_side=2).shape == expected


@pytest.mark.parametrize("seed", range(4))
def test_a_far_view_loses_the_detail_of_the_same_view_seen_near(
        monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    stripes = np.zeros((160, 120, 3), np.uint8)
    stripes[::2] = 255
    ident = Identity(Cutout(stripes, np.full((160, 120), 255, np.uint8)), loose=False)

    def detail(far_share: float) -> float:
        monkeypatch.setattr(views, "FAR_SHARE", far_share)
        view = in_store_view(np.random.default_rng(seed), ident, [ident], 224)
        assert view.shape == (224, 224, 3)
        return float(np.abs(np.diff(view.astype(np.float32), axis=0)).mean())

    assert detail(1.0) < 0.8 * detail(0.0)
