"""Training batches: a mirrored batch carries the targets of the mirrored boxes, and recipes
that train side by side must draw the same images (needs the ``train`` extras)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("boxes", [
    [(10.0, 20.0, 50.0, 90.0)],
    [(0.0, 0.0, 30.0, 12.0), (70.0, 40.0, 128.0, 128.0), (33.0, 5.0, 41.0, 60.0)],
])
def test_mirrored_batch_has_the_targets_of_mirrored_boxes(boxes: list[tuple[float, ...]]
                                                          ) -> None:
    from pipeline.train.data import targets
    from pipeline.train.run import _mirrored

    size = 128
    b = np.array(boxes, np.float32)
    mirrored = b[:, [2, 1, 0, 3]] * np.array([-1, 1, -1, 1], np.float32) \
        + np.array([size, 0, size, 0], np.float32)
    labels = np.zeros(len(b), np.int64)
    hm, dist, w = (torch.from_numpy(a)[None] for a in targets(b, labels, size, 1))
    img = torch.arange(3 * size * size, dtype=torch.float32).reshape(1, 3, size, size)
    m_img, m_hm, m_dist, m_w = _mirrored(img, hm, dist, w)
    e_hm, e_dist, e_w = (torch.from_numpy(a)[None] for a in targets(mirrored, labels, size, 1))

    assert torch.equal(m_img[..., 0], img[..., -1])
    assert torch.allclose(m_hm, e_hm, atol=1e-6)
    assert torch.allclose(m_w, e_w, atol=1e-6)
    on = e_w > 0
    assert torch.allclose(m_dist.permute(0, 2, 3, 1)[on], e_dist.permute(0, 2, 3, 1)[on],
                          atol=1e-4)


def test_recipes_that_draw_different_images_cannot_share_a_stream() -> None:
    from pipeline.train.recipe import PRODUCT, RECIPES
    from pipeline.train.run import _same_stream

    _same_stream(list(RECIPES.values()))
    with pytest.raises(ValueError, match="draw different training images"):
        _same_stream([PRODUCT, replace(PRODUCT, version="x", crop=PRODUCT.crop + 32)])
