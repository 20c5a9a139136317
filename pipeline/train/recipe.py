"""The recipes of the two default detectors."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    widths: tuple[int, int, int, int, int]  # stem, stride 4, 8, 16, 32
    neck: int
    input_size: int  # square letterbox side at inference
    crop: int  # square training crop
    displays: tuple[tuple[str, float], ...]  # display kind and its share of training scenes
    steps: int
    batch: int
    lr: float
    seed: int

    def to_json(self) -> dict[str, object]:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    "gondola-light": Recipe(
        name="gondola-light", version="2", widths=(16, 32, 64, 96, 128), neck=64,
        input_size=640, crop=320, displays=(("gondola", 0.8), ("endcap", 0.2)),
        steps=2400, batch=12, lr=3e-3, seed=11,
    ),
    "endcap-heavy": Recipe(
        name="endcap-heavy", version="2", widths=(24, 40, 80, 128, 160), neck=80,
        input_size=896, crop=352, displays=(("endcap", 0.7), ("gondola", 0.3)),
        steps=1800, batch=10, lr=3e-3, seed=23,
    ),
}
