"""Recipes that train side by side must draw the same images; the weights' moving average
(needs the ``train`` extras)."""

from __future__ import annotations

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("change", [{"crop": 416}, {"seed": 99}, {"cooler_share": 0.1},
                                    {"flat_stacks": 0.1}, {"thin_share": 0.5},
                                    {"thin_stacks": 0.5}, {"two_part": 0.2}, {"depth": 0.2},
                                    {"seamless": 0.2}, {"bottles": 0.2},
                                    {"price_labels": 0.2}, {"pegs": 0.2}])
def test_recipes_that_draw_different_images_cannot_share_a_stream(
        change: dict[str, float]) -> None:
    from pipeline.train.recipe import PRODUCT, Recipe
    from pipeline.train.run import _same_stream
    from pipeline.train.shelves import RowStyle

    _same_stream([PRODUCT, replace(PRODUCT, version="y", lr=PRODUCT.lr / 2, init=None,
                                   steps=10, ema=0.9, frozen_blocks=10,
                                   small_box_px=16.0, score_threshold=0.5,
                                   box_per_object=True)])
    (key, value), = change.items()
    other = (replace(PRODUCT, **{key: value}) if key in Recipe.__dataclass_fields__
             else replace(PRODUCT, rows=replace(PRODUCT.rows, **{key: value})))
    assert key in Recipe.__dataclass_fields__ or key in RowStyle.__dataclass_fields__
    with pytest.raises(ValueError, match="draw different training images"):
        _same_stream([PRODUCT, replace(other, version="x")])


@pytest.mark.parametrize("decay", [0.5, 0.9])
def test_the_moving_average_follows_the_weights_by_its_decay(decay: float) -> None:
    from pipeline.train.recipe import PRODUCT
    from pipeline.train.run import Arm

    net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    arm = Arm(replace(PRODUCT, ema=decay), net, torch.optim.SGD(net.parameters(), lr=1.0),
              list(net.parameters()), {k: v.clone() for k, v in before.items()})
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked += 3

    arm.update_ema()

    w = arm.weights()
    assert torch.allclose(w["0.weight"], before["0.weight"] + (1 - decay))
    assert int(w["1.num_batches_tracked"]) == 3  # counters are copied, not averaged
    assert w is arm.ema


def test_without_a_moving_average_the_weights_are_the_network_s() -> None:
    from pipeline.train.recipe import PRODUCT
    from pipeline.train.run import Arm

    net = torch.nn.Linear(2, 1)
    arm = Arm(replace(PRODUCT, ema=0.0), net, torch.optim.SGD(net.parameters(), lr=1.0),
              list(net.parameters()))
    arm.update_ema()

    assert arm.ema is None
    assert torch.equal(arm.weights()["weight"], net.weight)
