"""The recipe of the default product detector."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    neck: int
    exports: tuple[tuple[str, int], ...]  # model name and its square input side
    crop: int  # square training crop
    synthetic_share: float  # share of training images from the synthetic world
    synthetic_long_side: tuple[int, int]  # its photos' long side, model-input pixels
    frozen_blocks: int  # backbone blocks kept at their ImageNet weights
    steps: int
    batch: int
    lr: float
    seed: int

    def to_json(self) -> dict[str, object]:
        return asdict(self)


PRODUCT = Recipe(
    name="product", version="1", neck=64,
    exports=(("product-light", 768), ("product-heavy", 1152)),
    crop=384, synthetic_share=0.15, synthetic_long_side=(560, 1100), frozen_blocks=3,
    steps=3000, batch=8, lr=2e-3, seed=7,
)
