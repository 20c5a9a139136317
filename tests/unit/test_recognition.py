"""Naming maths: scores against the gallery, the reference offsets that stop hub packshots
from taking every query's name, and the colour layout that orders near ties."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.core.recognition import (
    HUE_BINS,
    LAYOUT_ROWS,
    SAT_BINS,
    Gallery,
    Match,
    Weights,
    candidates,
    choose,
    colour_layout,
    name_crop,
    nearly_as_like,
    reference_offsets,
    rerank_by_layout,
    rerank_by_size,
    similarity,
)

BINS = HUE_BINS * SAT_BINS + 1
EMBED_ONLY = Weights(embed=1.0, colour=0.0, aspect=0.0)


def _unit(*rows: list[float]) -> np.ndarray:
    a = np.array(rows, np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _gallery(skus: tuple[str, ...], embeddings: np.ndarray) -> Gallery:
    n = len(skus)
    return Gallery(skus, embeddings, np.full((n, BINS), 1 / BINS, np.float32),
                   np.ones(n, np.float32))


def _scores(queries: np.ndarray, gallery: Gallery) -> np.ndarray:
    n = len(queries)
    return similarity(embeddings=queries, colours=np.full((n, BINS), 1 / BINS, np.float32),
                      aspects=np.ones(n, np.float32), gallery=gallery, weights=EMBED_ONLY)


@pytest.mark.parametrize(("scores", "k", "expected"), [
    # the second row is near every reference photo: it is lowered, the others raised
    ([[0.2, 0.9, 0.1], [0.3, 0.8, 0.1]], 2, [-0.15, 0.45, -0.3]),
    # k is the nearest photos per row, not all of them
    ([[0.9, 0.1], [0.1, 0.1], [0.1, 0.1]], 1, [0.4, -0.4]),
    ([[0.9, 0.1], [0.1, 0.1], [0.1, 0.1]], 3, [0.1333, -0.1333]),
    # k larger than the reference: all of it
    ([[0.5, 0.3]], 100, [0.1, -0.1]),
    # rows alike: nothing to correct
    ([[0.4, 0.4], [0.6, 0.6]], 2, [0.0, 0.0]),
])
def test_reference_offsets(scores: list[list[float]], k: int, expected: list[float]) -> None:
    got = reference_offsets(np.array(scores, np.float32), k)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert abs(float(got.mean())) < 1e-6  # centred: scores keep their scale


@pytest.mark.parametrize("shape", [(0, 3), (3,)])
def test_reference_offsets_need_photos(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="reference scores"):
        reference_offsets(np.zeros(shape, np.float32))


def test_offsets_stop_a_hub_packshot_from_taking_the_name() -> None:
    # "pile" looks like any in-store photo (close to their common direction), "lemon" is the
    # product; a lemon photo from the store shares that common look.
    gallery = _gallery(("pile", "lemon"), _unit([1.0, 0.15, 0.1], [0.5, 1.0, 0.0]))
    query = _unit([0.9, 0.45, 0.0])
    assert candidates(_scores(query, gallery), gallery, 1)[0][0][0] == "pile"

    reference = _unit([1.0, 0.0, 0.0], [1.0, 0.0, 0.3], [1.0, 0.2, -0.3], [0.9, -0.1, 0.2])
    offsets = reference_offsets(_scores(reference, gallery), k=4)
    corrected = gallery.with_offsets(offsets)

    assert candidates(_scores(query, corrected), corrected, 1)[0][0][0] == "lemon"
    np.testing.assert_allclose(_scores(query, corrected),
                               _scores(query, gallery) - offsets[None, :], atol=1e-6)


def test_offsets_must_match_the_gallery() -> None:
    gallery = _gallery(("a", "b"), _unit([1.0, 0.0], [0.0, 1.0]))
    with pytest.raises(ValueError, match="offsets for a gallery of 2 rows"):
        gallery.with_offsets(np.zeros(3, np.float32))


CANDS = [("SKU-014", 0.93), ("SKU-013", 0.88), ("SKU-001", 0.83), ("SKU-002", 0.60)]


@pytest.mark.parametrize(("cands", "planned", "expected"), [
    (CANDS, None, Match("SKU-014", 0.93, "catalog")),
    (CANDS, {"SKU-013", "SKU-002"}, Match("SKU-013", 0.88, "planned")),
    # the bay's best candidate under the threshold: the catalog's best instead
    ([("SKU-014", 0.93), ("SKU-002", 0.40)], {"SKU-002"}, Match("SKU-014", 0.93, "catalog")),
    ([("SKU-014", 0.40)], None, Match("unknown", 0.40, "none")),
    ([], {"SKU-014"}, Match("unknown", 0.0, "none")),
])
def test_choose(cands: list[tuple[str, float]], planned: set[str] | None,
                expected: Match) -> None:
    assert choose(cands, planned=planned, threshold=0.55) == expected


@pytest.mark.parametrize(("cands", "margin", "expected"), [
    (CANDS, 0.1, {"SKU-013"}),  # the look-alike, 0.05 behind
    (CANDS, 0.2, {"SKU-013", "SKU-001"}),
    (CANDS, 0.0, set()),  # off
    (CANDS, 0.5, {"SKU-013", "SKU-001", "SKU-002"}),
    ([("SKU-014", 0.60), ("SKU-013", 0.50)], 0.2, set()),  # under the threshold
    ([("SKU-014", 0.50), ("SKU-013", 0.48)], 0.2, set()),  # unknown: nothing
])
def test_nearly_as_like(cands: list[tuple[str, float]], margin: float,
                        expected: set[str]) -> None:
    match = choose(cands, planned=None, threshold=0.55)
    assert nearly_as_like(cands, match, threshold=0.55, margin=margin) == expected


@pytest.mark.parametrize(("cands", "floor", "margin", "expected"), [
    # unknown (best under 0.55): with a floor, what clears it within the margin of the best
    ([("SKU-014", 0.50), ("SKU-013", 0.48)], 0.45, 0.2, {"SKU-014", "SKU-013"}),
    ([("SKU-014", 0.50), ("SKU-013", 0.40)], 0.45, 0.2, {"SKU-014"}),  # under the floor
    ([("SKU-014", 0.50), ("SKU-013", 0.46)], 0.40, 0.02, {"SKU-014"}),  # outside the margin
    ([("SKU-014", 0.40)], 0.45, 0.2, set()),  # nothing clears the floor
    ([("SKU-014", 0.50), ("SKU-013", 0.48)], 0.55, 0.2, set()),  # floor at the threshold: off
    ([("SKU-014", 0.50), ("SKU-013", 0.48)], None, 0.2, set()),  # no floor: off
    ([("SKU-014", 0.50), ("SKU-013", 0.48)], 0.45, 0.0, set()),  # no margin: off
    # a named crop keeps the threshold as its floor
    ([("SKU-014", 0.60), ("SKU-013", 0.50)], 0.45, 0.2, set()),
])
def test_an_unknown_crop_is_nearly_as_like_what_clears_the_floor(
        cands: list[tuple[str, float]], floor: float | None, margin: float,
        expected: set[str]) -> None:
    match = choose(cands, planned=None, threshold=0.55)
    assert nearly_as_like(cands, match, threshold=0.55, margin=margin, floor=floor) == expected
    assert name_crop(cands, planned=None, threshold=0.55, margin=margin, floor=floor)[1] == (
        expected)


def test_a_planned_choice_is_nearly_as_like_the_catalog_best() -> None:
    match = choose(CANDS, planned={"SKU-013"}, threshold=0.55)
    assert nearly_as_like(CANDS, match, threshold=0.55, margin=0.1) == {"SKU-014"}


def test_name_crop_gives_the_name_and_the_near_names() -> None:
    assert name_crop(CANDS, planned={"SKU-014"}, threshold=0.55, margin=0.1) == (
        "SKU-014", frozenset({"SKU-013"}))


def test_the_comply_stage_passes_the_floor_on_to_each_unknown_product() -> None:
    from pipeline.tasks.steps import name_detections

    det = {"detections": [
        {"box": [0, 0, 10, 20], "score": 0.9, "candidates": [["SKU-014", 0.50], ["SKU-013", 0.3]]},
        {"box": [10, 0, 20, 20], "score": 0.9, "candidates": [["SKU-014", 0.80]]},
        {"box": [20, 0, 30, 20], "score": 0.8, "sku": "SKU-002"},  # an SKU detector's label
    ]}

    seen = name_detections(det, {"SKU-014"}, 0.55, 0.1, 0.45)
    assert [(d.sku, d.alternatives) for d in seen] == [
        ("unknown", frozenset({"SKU-014"})), ("SKU-014", frozenset()), ("SKU-002", frozenset())]
    assert name_detections(det, {"SKU-014"}, 0.55, 0.1)[0].alternatives == frozenset()


def _pack(band_bgr: tuple[int, int, int], band_row: int, height: int = 40) -> np.ndarray:
    """A blue pack whose ``band_row``-th quarter is ``band_bgr``."""
    img = np.zeros((height, 20, 3), np.uint8)
    img[:] = (160, 40, 20)
    q = height // 4
    img[band_row * q:(band_row + 1) * q] = band_bgr
    return img


def test_colour_layout_tells_where_the_band_is() -> None:
    white_top, yellow_top = _pack((240, 240, 240), 1), _pack((40, 200, 240), 1)
    yellow_low = _pack((40, 200, 240), 3)
    lay = {k: colour_layout(v) for k, v in
           (("white", white_top), ("yellow", yellow_top), ("low", yellow_low))}
    assert all(v.shape == (LAYOUT_ROWS * 2,) for v in lay.values())
    dist = {k: float(np.abs(lay["yellow"] - v).sum()) for k, v in lay.items()}
    assert dist["yellow"] == 0.0
    assert dist["white"] > 20 and dist["low"] > 20  # another band colour; another place
    # a grey pixel's chroma is neutral (128); lighting's brightness does not move it
    np.testing.assert_allclose(colour_layout(np.full((8, 8, 3), 90, np.uint8)), 128, atol=1)
    np.testing.assert_allclose(colour_layout(np.full((8, 8, 3), 200, np.uint8)), 128, atol=1)


def test_colour_layout_reads_the_product_not_its_backdrop() -> None:
    img = _pack((40, 200, 240), 0)
    mask = np.full(img.shape[:2], 255, np.uint8)
    padded = np.full((40, 40, 3), 255, np.uint8)
    padded[:, 10:30] = img
    pad_mask = np.zeros((40, 40), np.uint8)
    pad_mask[:, 10:30] = mask
    np.testing.assert_allclose(colour_layout(padded, pad_mask), colour_layout(img), atol=0.5)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (3, 50)])
def test_colour_layout_of_a_sliver(size: tuple[int, int]) -> None:
    out = colour_layout(np.zeros((*size, 3), np.uint8))
    assert out.shape == (LAYOUT_ROWS * 2,) and np.isfinite(out).all()


NAN = float("nan")


# Each row's layout is one value repeated in every band and channel: 40 from the crop's is a
# distance of 80 (a* and b* 40 apart in each band), 0.8 of score at weight 0.01.
@pytest.mark.parametrize(("scores", "crop", "rows", "expected"), [
    # a near tie: the row whose layout is nearer keeps its score, the other loses
    ([[0.90, 0.88]], [0.0], [[40.0], [0.0]], [[0.90 - 0.8, 0.88]]),
    # not near (beyond the margin): left as it is
    ([[0.90, 0.70]], [0.0], [[40.0], [0.0]], [[0.90, 0.70]]),
    # the best already has the nearest layout: nothing moves
    ([[0.90, 0.88]], [0.0], [[0.0], [40.0]], [[0.90, 0.88 - 0.8]]),
    # a row signed without a layout is left as it is, and is no yardstick
    ([[0.90, 0.88, 0.89]], [0.0], [[40.0], [NAN], [20.0]],
     [[0.90 - 0.4, 0.88, 0.89]]),
    # nor is a row whose layout is not finite
    ([[0.90, 0.88, 0.89]], [0.0], [[40.0], [float("inf")], [20.0]],
     [[0.90 - 0.4, 0.88, 0.89]]),
    # no near row has a layout: nothing moves
    ([[0.90, 0.88]], [0.0], [[NAN], [NAN]], [[0.90, 0.88]]),
    # crops are reordered each against its own near rows
    ([[0.90, 0.88], [0.50, 0.52]], [0.0], [[40.0], [0.0]],
     [[0.90 - 0.8, 0.88], [0.50 - 0.8, 0.52]]),
])
def test_rerank_by_layout(scores: list[list[float]], crop: list[float],
                          rows: list[list[float]], expected: list[list[float]]) -> None:
    s = np.array(scores, np.float32)
    crops = np.tile(np.array(crop * LAYOUT_ROWS * 2, np.float32), (len(s), 1))
    gallery = np.array([r * LAYOUT_ROWS * 2 for r in rows], np.float32)
    got = rerank_by_layout(s, crops, gallery, weight=0.01, margin=0.05)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.max(axis=1) <= s.max(axis=1) + 1e-7).all()  # a best score never rises


def test_rerank_by_layout_off_at_weight_zero() -> None:
    s = np.array([[0.9, 0.88]], np.float32)
    got = rerank_by_layout(s, np.zeros((1, LAYOUT_ROWS * 2), np.float32),
                           np.array([[40.0] * LAYOUT_ROWS * 2, [0.0] * LAYOUT_ROWS * 2],
                                    np.float32), weight=0.0, margin=0.05)
    np.testing.assert_array_equal(got, s)


# One product line in two sizes, and a can; fronts in cm.
SIZES = {"SMALL": (8.0, 22.0), "LARGE": (8.0, 26.0), "CAN": (6.5, 12.0)}
SURE_CAN = [("CAN", 0.9), ("SMALL", 0.5)]


def _box(x: float, scale: float, size: tuple[float, float], wider: float = 1.0
         ) -> list[float]:
    """A product's box standing on a board at y = 500, ``scale`` pixels per cm."""
    w, h = size[0] * scale * wider, size[1] * scale
    return [x, 500 - h, x + w, 500]


def _row(crop: list[float], cands: list[tuple[str, float]],
         neighbours: list[tuple[list[float], list[tuple[str, float]]]]
         ) -> tuple[list[list[tuple[str, float]]], np.ndarray]:
    boxes = [crop] + [b for b, _ in neighbours]
    return [cands] + [c for _, c in neighbours], np.array(boxes, np.float32)


CANS_AT_5 = [(_box(100 + 40 * i, 5, SIZES["CAN"]), SURE_CAN) for i in range(4)]


@pytest.mark.parametrize(("crop", "cands", "neighbours", "expected"), [
    # a 26 cm bottle among cans at 5 px/cm: the large one wins, the small loses its misfit
    (_box(0, 5, SIZES["LARGE"]), [("SMALL", 0.90), ("LARGE", 0.88)], CANS_AT_5,
     [("LARGE", 0.88), ("SMALL", round(0.90 - float(np.log(26 / 22)), 4))]),
    # a 22 cm one: the small one keeps its score, the large loses
    (_box(0, 5, SIZES["SMALL"]), [("SMALL", 0.90), ("LARGE", 0.88)], CANS_AT_5,
     [("SMALL", 0.90), ("LARGE", round(0.88 - float(np.log(26 / 22)), 4))]),
    # beyond the margin: no near tie, left as it is
    (_box(0, 5, SIZES["LARGE"]), [("SMALL", 0.90), ("LARGE", 0.70)], CANS_AT_5,
     [("SMALL", 0.90), ("LARGE", 0.70)]),
    # a near candidate without a size is no near tie
    (_box(0, 5, SIZES["LARGE"]), [("SMALL", 0.90), ("OTHER", 0.89)], CANS_AT_5,
     [("SMALL", 0.90), ("OTHER", 0.89)]),
    # one sure neighbour is too few to scale the photo
    (_box(0, 5, SIZES["LARGE"]), [("SMALL", 0.90), ("LARGE", 0.88)], CANS_AT_5[:1],
     [("SMALL", 0.90), ("LARGE", 0.88)]),
    # neighbours unsure of their SKU (a near tie of their own) or under the threshold
    # scale nothing
    (_box(0, 5, SIZES["LARGE"]), [("SMALL", 0.90), ("LARGE", 0.88)],
     [(b, [("CAN", 0.9), ("SMALL", 0.85)]) for b, _ in CANS_AT_5[:2]]
     + [(b, [("CAN", 0.6)]) for b, _ in CANS_AT_5[2:]],
     [("SMALL", 0.90), ("LARGE", 0.88)]),
    # boxes a detector draws 20 % wider than products, the crop's as its neighbours': the
    # width fits every candidate alike, the height tells
    (_box(0, 5, SIZES["LARGE"], wider=1.2), [("SMALL", 0.90), ("LARGE", 0.88)],
     [(_box(100 + 40 * i, 5, SIZES["CAN"], wider=1.2), SURE_CAN) for i in range(4)],
     [("LARGE", 0.88), ("SMALL", round(0.90 - float(np.log(26 / 22)), 4))]),
    # a photo along the aisle: the crop's nearest neighbours scale it (2.5 px/cm far off),
    # not the near end's (5 px/cm), where a 26 cm bottle would read as 13 cm
    (_box(1000, 2.5, SIZES["LARGE"]), [("SMALL", 0.90), ("LARGE", 0.88)],
     [(_box(1050 + 20 * i, 2.5, SIZES["CAN"]), SURE_CAN) for i in range(6)] + CANS_AT_5 * 2,
     [("LARGE", 0.88), ("SMALL", round(0.90 - float(np.log(26 / 22)), 4))]),
], ids=["large", "small", "no-tie", "no-size", "one-neighbour", "unsure-neighbours",
        "wide-boxes", "perspective"])
def test_rerank_by_size(crop: list[float], cands: list[tuple[str, float]],
                        neighbours: list[tuple[list[float], list[tuple[str, float]]]],
                        expected: list[tuple[str, float]]) -> None:
    all_cands, boxes = _row(crop, cands, neighbours)
    got = rerank_by_size(all_cands, boxes, SIZES, weight=1.0, margin=0.1, threshold=0.65)
    assert got[0] == expected
    assert got[0][0][1] <= cands[0][1]  # a best score never rises
    assert got[1:] == all_cands[1:]  # the sure neighbours keep their names


def test_rerank_by_size_is_off_at_weight_zero_and_without_sizes() -> None:
    all_cands, boxes = _row(_box(0, 5, SIZES["LARGE"]), [("SMALL", 0.90), ("LARGE", 0.88)],
                            CANS_AT_5)
    for weight, sizes in ((0.0, SIZES), (1.0, {})):
        got = rerank_by_size(all_cands, boxes, sizes, weight=weight, margin=0.1,
                             threshold=0.65)
        assert got == all_cands


def test_rerank_by_size_wants_a_box_per_candidate_list() -> None:
    all_cands, boxes = _row(_box(0, 5, SIZES["LARGE"]), [("SMALL", 0.9)], CANS_AT_5)
    with pytest.raises(ValueError, match="candidate lists"):
        rerank_by_size(all_cands, boxes[:-1], SIZES, weight=1.0, margin=0.1, threshold=0.65)


def test_similarity_orders_look_alikes_by_layout_only_when_both_sides_have_one() -> None:
    gallery = _gallery(("SKU-009", "SKU-010"), _unit([1.0, 0.0], [1.0, 0.01]))
    lay = np.stack([colour_layout(_pack((240, 240, 240), 1)),
                    colour_layout(_pack((40, 200, 240), 1))])
    crop = colour_layout(_pack((40, 200, 240), 1))[None]
    query = _unit([1.0, 0.0])
    weights = replace(EMBED_ONLY, layout=0.004)
    kw = {"embeddings": query, "colours": np.full((1, BINS), 1 / BINS, np.float32),
          "aspects": np.ones(1, np.float32), "weights": weights}
    plain = similarity(gallery=gallery, **kw)
    assert candidates(plain, gallery, 1)[0][0][0] == "SKU-009"  # the embedding's coin toss
    with_layouts = replace(gallery, layouts=lay)
    assert candidates(similarity(gallery=with_layouts, **kw), with_layouts, 1)[0][0][0] == "SKU-009"
    named = similarity(gallery=with_layouts, layouts=crop, **kw)
    assert candidates(named, with_layouts, 1)[0][0][0] == "SKU-010"


@pytest.mark.parametrize("chunk_bytes", [1, 4_000, 32 << 20])
def test_the_colour_term_is_the_same_however_few_rows_are_scored_at_once(
        chunk_bytes: int) -> None:
    import tracemalloc

    from pipeline.core.recognition import colour_intersection

    rng = np.random.default_rng(4)
    crops = rng.random((100, 49), dtype=np.float32)
    rows = rng.random((3_000, 49), dtype=np.float32)
    whole = np.minimum(crops[:, None, :], rows[None, :, :]).sum(axis=2)
    tracemalloc.start()
    got = colour_intersection(crops, rows, chunk_bytes=chunk_bytes)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(got, whole)
    # never the crops x rows x bins array at once (59 MB here), only the answer and a chunk
    assert peak < got.nbytes + 2 * max(chunk_bytes, 100 * 49 * 4) + (1 << 16)
