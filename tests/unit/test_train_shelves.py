"""Training shelves: every product box lies inside the crop, seen square, along the aisle or
behind a cooler's glass doors; door frames hide what they cover; boxes lying down stack;
upright packs stand alone when the style says so; two-part faces keep their lower part;
a bottle's print is a label band between a plain body and cap, under a neck; shelf-edge
labels print large prices and hide what they cover;
the packs behind a facing show over it, darker, boxed as no product; packs hang on a
pegboard's hooks in tiers, under the hooks' labels."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.packshot import Cutout
from pipeline.train.products import MASTER_HEIGHT, ProductBank
from pipeline.train.shelves import (
    RowStyle,
    _bottle,
    _cooler_doors,
    _fill_row,
    _packs_behind,
    _pegboard,
    _price_labels,
    _two_part,
    render_shelf,
)

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


def _row_boxes(bank: ProductBank, style: RowStyle, seed: int = 2, rows: int = 30
               ) -> np.ndarray:
    rng = np.random.default_rng(seed)
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(rows):
        canvas = np.zeros((200, 2000, 3), np.uint8)
        owner = np.full((200, 2000), -1, np.int32)
        _fill_row(rng, bank, canvas, owner, boxes, 0, 2000, 190, 120, style)
    return np.array(boxes, np.float64)


@pytest.mark.parametrize(("flat_stacks", "widest", "stacked"), [(0.0, 3.6, False),
                                                               (1.0, 5.6, True)])
def test_boxes_lying_down_are_wide_and_stacked(bank: ProductBank, flat_stacks: float,
                                               widest: float, stacked: bool) -> None:
    b = _row_boxes(bank, RowStyle(flat_stacks=flat_stacks), seed=1)

    aspect = (b[:, 2] - b[:, 0]) / (b[:, 3] - b[:, 1])
    assert aspect.max() <= widest
    lying = b[aspect > 3.3]  # wider than any pack of the ordinary kinds
    assert (len(lying) > 0) is stacked
    if stacked:  # the same facing, one unit above the other
        same_x = (lying[:, None, 0] == lying[None, :, 0]) & (lying[:, None, 1] < lying[None, :, 1])
        assert same_x.any()


def _stacked(b: np.ndarray) -> int:
    """Boxes with another of the same left edge and width right above them."""
    same = ((b[:, None, 0] == b[None, :, 0]) & (b[:, None, 2] == b[None, :, 2])
            & (b[:, None, 3] <= b[None, :, 1] + 1) & (b[:, None, 1] < b[None, :, 1]))
    return int(same.any(axis=1).sum())


@pytest.mark.parametrize(("thin_stacks", "any_stacked"), [(0.0, False), (1.0, True)])
def test_upright_packs_stand_alone_unless_they_may_stack(bank: ProductBank, thin_stacks: float,
                                                         any_stacked: bool) -> None:
    b = _row_boxes(bank, RowStyle(thin_share=0.6, thin_stacks=thin_stacks))
    upright = b[(b[:, 3] - b[:, 1]) > 1.6 * (b[:, 2] - b[:, 0])]
    assert len(upright) > 20
    assert (_stacked(upright) > 0) is any_stacked
    assert _stacked(b[(b[:, 3] - b[:, 1]) <= (b[:, 2] - b[:, 0])]) > 0  # others still stack


def test_thin_share_sets_how_many_products_are_thin(bank: ProductBank) -> None:
    def thin(share: float) -> float:
        b = _row_boxes(bank, RowStyle(thin_share=share, thin_stacks=0.0))
        return float(((b[:, 3] - b[:, 1]) > 1.8 * (b[:, 2] - b[:, 0])).mean())

    assert thin(0.6) > thin(0.1) + 0.2


@pytest.mark.parametrize("seed", range(4))
def test_a_two_part_face_repaints_only_its_top(bank: ProductBank, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cut = Cutout(np.full((100, 30, 3), 77, np.uint8), np.full((100, 30), 255, np.uint8))

    out = _two_part(rng, bank, cut)

    changed = (out.image != cut.image).any(axis=(1, 2))
    assert changed[:15].all()  # at least the top 15 %
    assert not changed[50:].any()  # never the lower half
    assert (out.mask == cut.mask).all()  # still one product, the same shape


@pytest.mark.parametrize("seed", range(8))
def test_a_bottle_wears_its_print_as_a_band_on_a_plain_body(seed: int) -> None:
    rng = np.random.default_rng(seed)
    stripes = np.tile(np.array([0, 255], np.uint8).repeat(2)[None, :, None], (120, 10, 3))
    cut = Cutout(stripes, np.full((120, 40), 255, np.uint8))  # upright, striped down

    out = _bottle(rng, cut)

    assert out.image.shape == cut.image.shape and out.mask.shape == cut.mask.shape
    printed = np.nonzero(out.image.std(axis=1).max(axis=1) > 90)[0]  # the stripes' rows
    assert printed.min() >= 0.2 * 120 and printed.max() < 0.98 * 120
    assert 0.25 * 120 <= printed.max() - printed.min() + 1 <= 0.8 * 120
    band = slice(printed.min(), printed.max() + 1)
    assert (out.mask[band] == 255).all()  # the body is the pack's full width
    assert (out.mask[printed.max() + 1:] == 255).all()
    assert out.mask[0].any()  # the cap is part of the product
    body = out.image[printed.max() + 1:]
    if len(body) > 1:  # plain below the label: one colour down each column
        assert body.astype(np.int16).std(axis=0).max() < 1.0


@pytest.mark.parametrize("seed", range(6))
def test_shelf_edge_labels_print_prices_and_hide_what_they_cover(seed: int) -> None:
    canvas = np.full((120, 400, 3), 90, np.uint8)
    owner = np.full((120, 400), 3, np.int32)

    _price_labels(np.random.default_rng(seed), canvas, owner, 20, 380, 40, 10)

    painted = (canvas != 90).any(axis=2)
    assert painted.any()
    assert not painted[:40].any() and not painted[:, :20].any()  # from the edge down only
    assert (owner[painted] == -1).all()  # a label is no product
    assert (owner[~painted] == 3).sum() > 0.8 * (~painted).sum()
    labels = canvas[owner == -1].astype(np.int16)
    assert labels.max() - labels.min() > 150  # dark print on light paper (or the reverse)


@pytest.mark.parametrize("seed", range(6))
def test_packs_behind_show_over_the_facing_darker_and_as_no_product(seed: int) -> None:
    canvas = np.zeros((200, 60, 3), np.uint8)
    owner = np.full((200, 60), 7, np.int32)
    cut = Cutout(np.full((80, 40, 3), 200, np.uint8), np.full((80, 40), 255, np.uint8))

    _packs_behind(np.random.default_rng(seed), canvas, owner, cut, 10, top=110, ceiling=60)

    painted = canvas.any(axis=2)
    rows = np.nonzero(painted.any(axis=1))[0]
    assert rows.min() >= 60  # never over the row above
    assert rows.min() < 110  # something shows over the facing
    assert canvas[painted].max() <= 160  # in the shade of the shelf
    assert (owner[painted] == -1).all() and (owner[~painted] == 7).all()


@pytest.mark.parametrize(("seamless", "gapped"), [(0.0, True), (1.0, False)])
def test_seamless_facings_touch(bank: ProductBank, seamless: float, gapped: bool) -> None:
    touching = gaps = 0
    for seed in range(30):  # row by row: facings of one pack share its top, bottom and width
        b = _row_boxes(bank, RowStyle(seamless=seamless), seed=seed, rows=1)
        same_pack = ((b[:, None, 1] == b[None, :, 1]) & (b[:, None, 3] == b[None, :, 3])
                     & ((b[:, None, 2] - b[:, None, 0]) == (b[None, :, 2] - b[None, :, 0])))
        gap = b[None, :, 0] - b[:, None, 2]  # one facing's right edge to the next one's left
        touching += int((same_pack & (gap == 0)).sum())
        gaps += int((same_pack & (gap > 0) & (gap <= 6)).sum())
    assert touching > 0
    # Seamless: only two different packs of the same size can stand a few pixels apart.
    assert (gaps > 0.2 * touching) is gapped
    assert (gaps < 0.02 * touching) is not gapped


@pytest.mark.parametrize("seed", range(6))
def test_packs_hang_on_a_pegboard_in_tiers_under_their_hooks_labels(
        bank: ProductBank, seed: int) -> None:
    canvas = np.zeros((200, 300, 3), np.uint8)
    owner = np.full((200, 300), 999, np.int32)
    boxes: list[tuple[int, int, int, int]] = []

    _pegboard(np.random.default_rng(seed), bank, canvas, owner, boxes, 20, 280, 40, 180)

    b = np.array(boxes)
    assert len(b) >= 1
    assert (b[:, 1] >= 40).all() and (b[:, 3] <= 180).all()  # hung inside the board
    assert not canvas[:40].any() and not canvas[180:].any() and not canvas[:, :20].any()
    assert (owner[:40] == 999).all()  # nothing drawn outside is touched
    board = owner[40:180, 20:280]
    assert (board == -1).any()  # the board, hooks and labels are no product
    shown = {int(i) for i in np.unique(board) if i >= 0}
    assert shown <= set(range(len(b))) and len(shown) == len(b)
    for i in shown:  # a pack's pixels lie in its box
        ys, xs = np.nonzero(owner == i)
        x1, y1, x2, y2 = b[i]
        assert xs.min() >= max(x1, 0) and xs.max() < x2 and ys.min() >= y1 and ys.max() < y2
    tops = np.sort(b[:, 1])  # a tier's packs hang from one line of hooks, a little apart
    assert (np.diff(tops) > 140 / 3 * 0.2).sum() + 1 <= 3
