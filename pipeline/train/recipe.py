"""The recipe of the default product detector."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from pipeline.train.shelves import RowStyle


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
    # Go on training this shipped model (``models/<init>/model.onnx``, the latest version of
    # that name) rather than start from ImageNet; None: from ImageNet.
    init: str | None = None
    # The exported cards' score threshold: where recall and precision balance on real shelves.
    score_threshold: float = 0.3
    # Scores of boxes whose short side is under this many pixels of the first export's input
    # (as many more for a larger input) are damped (the card's ``small_boxes``, its default
    # power); 0: none. Fitted on real shelves with the threshold.
    small_box_px: float = 0.0
    # NMS overlap of the exported cards.
    iou_threshold: float = 0.5
    # The cards' ``box_agreement``: each peak's score times its neighbouring cells' agreement
    # on its box, to this power; 0: none. Fitted on real shelves with the threshold.
    box_agreement: float = 0.0
    # The cards' ``facing_score`` / ``evidence_score`` (compliance, on this model's scores);
    # None: the compliance settings' defaults, fitted on raw scores.
    facing_score: float | None = None
    evidence_score: float | None = None
    # Share of training shelves seen along the aisle (strong perspective, far side small).
    oblique_share: float = 0.0
    # Share of training shelves behind a cooler's glass doors (frames, handles, glare).
    cooler_share: float = 0.0
    # Decay of the weights' moving average that checkpoints and exports keep; 0: none.
    ema: float = 0.0
    # The box loss counts each product once, however many cells regress its sides; False:
    # each cell, so that large products weigh as many times more as they have cells.
    box_per_object: bool = False
    # How the shelves' rows are drawn: boxes lying down, thin packs, stacking, seen from above.
    rows: RowStyle = field(default_factory=RowStyle)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


# Version 1: 3,000 steps from ImageNet at 2e-3. Version 2 went on from version 1 for 2,000
# steps at 6e-4 with the shelves of real aspect (thin and wide packs) and the building around
# the fixture. Version 3 went on from version 2 for 1,000 steps at 4e-4 with shelves seen
# along the aisle (its recipe is in its card). Version 5 goes on from version 3 with a
# quarter of the shelves behind a cooler's glass doors, half the wide packs boxes lying down
# in stacks, and a moving average of the weights (what checkpoints and exports keep).
PRODUCT = Recipe(
    name="product", version="5", neck=64,
    exports=(("product-light", 768), ("product-heavy", 1152)),
    crop=384, synthetic_share=0.15, synthetic_long_side=(560, 1100), frozen_blocks=3,
    steps=1000, batch=8, lr=3e-4, seed=13, init="product-light/3", score_threshold=0.4,
    oblique_share=0.4, cooler_share=0.25, rows=RowStyle(flat_stacks=0.5), ema=0.995,
)
# Version 6 goes on from version 5. Version 5 cut bottles and tall packs across (a cap, a
# label band) into two products stacked, and three real packs in five are taller than 3:2: more of
# the products are thin, most stand alone rather than stacked, and half have two-part faces.
PRODUCT_6 = replace(PRODUCT, version="6", init="product-light/5", steps=750,
                    rows=replace(PRODUCT.rows, thin_share=0.4, thin_stacks=0.25, two_part=0.5))
# Version 7 goes on from version 6 with a third of the rows seen from above: the packs
# behind the front facings show over them, as on the low shelves of a photo taken standing.
PRODUCT_7 = replace(PRODUCT_6, version="7", init="product-light/6", steps=500,
                    rows=replace(PRODUCT_6.rows, depth=0.3))
# Version 8 goes on from version 7 with a third of the products in seamless runs: version 7
# boxes runs of identical facings that touch as one product.
PRODUCT_8 = replace(PRODUCT_7, version="8", init="product-light/7",
                    rows=replace(PRODUCT_7.rows, seamless=0.35))
# Version 9 goes on from version 8 with two in five upright packs standing alone drawn as
# bottles (version 8 boxes a bottle's label band, or its body above the label, as a product)
# and most shelf edges labelled with prices in large digits (it boxes price tags); only the
# backbone's last blocks learn (10 of 16 kept): longer runs that move the whole backbone
# fit the drawn shelves better and real ones worse. Its boxes under 16 pixels across are
# right less often than their scores say: their scores are damped, threshold 0.38.
PRODUCT_9 = replace(PRODUCT_8, version="9", init="product-light/8", frozen_blocks=10,
                    steps=250, rows=replace(PRODUCT_8.rows, bottles=0.4, price_labels=0.6),
                    small_box_px=16.0, score_threshold=0.38)
# Version 10 goes on from version 9 with three rows in ten hanging on pegboard hooks
# (version 9 boxes a hook's header card and its neighbours as one product) and the box loss
# counting each product once: it had weighed each by its cells, so a product 16 pixels across
# counted a ninth of one 80 across, and half the real products are under 32 pixels. Its
# threshold is where recall and precision come closest on the tuning photos.
PRODUCT_10 = replace(PRODUCT_9, version="10", init="product-light/9", box_per_object=True,
                     rows=replace(PRODUCT_9.rows, pegs=0.3), score_threshold=0.4)
# Version 11 is version 10's network (no steps) scored anew: each peak's score is weighed by
# how well its neighbouring cells agree on its box, so boxes the network is unsure of (two
# packs merged, half a bottle) rank under those it is sure of, and NMS keeps boxes that
# overlap up to 0.55 (packed facings). Small boxes stay damped as version 10's. Its scores run
# lower than version 10's: compliance counts a facing from 0.22 (version 10: 0.25).
PRODUCT_11 = replace(PRODUCT_10, version="11", init="product-light/10", steps=0,
                     box_agreement=1.0, iou_threshold=0.55, score_threshold=0.29,
                     facing_score=0.22, evidence_score=0.16)
# Recipes that draw the same images train side by side (``--recipe A --recipe B``).
RECIPES = {r.version: r for r in (PRODUCT, PRODUCT_6, PRODUCT_7, PRODUCT_8, PRODUCT_9,
                                  PRODUCT_10, PRODUCT_11)}
# What ``make models`` trains: the recipe of the shipped default.
DEFAULT = PRODUCT_11
