"""Recipes that train side by side must draw the same images (needs the ``train`` extras)."""

from __future__ import annotations

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")


def test_recipes_that_draw_different_images_cannot_share_a_stream() -> None:
    from pipeline.train.recipe import PRODUCT
    from pipeline.train.run import _same_stream

    _same_stream([PRODUCT, replace(PRODUCT, version="y", lr=PRODUCT.lr / 2, init=None)])
    with pytest.raises(ValueError, match="draw different training images"):
        _same_stream([PRODUCT, replace(PRODUCT, version="x", crop=PRODUCT.crop + 32)])
