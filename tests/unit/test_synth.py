"""The synthetic shelf world: determinism, truth that agrees with itself, EXIF as phones write
it, a catalog of distinct products and plausible planograms."""

from __future__ import annotations

import json
import re
from functools import cache
from io import BytesIO
from itertools import combinations
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.core.orientation import oriented_size
from pipeline.synth.catalog import CATALOG, LABELS, SKU_IDS, UNKNOWN_SKU, packshot
from pipeline.synth.exif import (
    TAG_BODY_SERIAL,
    TAG_DATETIME_ORIGINAL,
    TAG_EXIF_IFD,
    TAG_GPS_IFD,
    TAG_MAKE,
    TAG_MODEL,
    TAG_ORIENTATION,
)
from pipeline.synth.planogram import DISPLAYS, FIXTURE_WIDTH_CM, make_planogram
from pipeline.synth.world import Photo, make_photo, make_sample

LONG_SIDE = 1600
SEED = 0
# Photos of seed 0: 0, 1 endcaps, 4, 6 gondolas (as drawn at max_long_side=1600).
INDICES = (0, 1, 4, 6)
OBJECT_STATUSES = {"in_place", "misplaced", "extra", "unknown"}


@cache
def photo(seed: int, index: int) -> Photo:
    return make_photo(seed, index, max_long_side=LONG_SIDE)


def truth_of(index: int, seed: int = SEED) -> dict[str, Any]:
    return photo(seed, index).truth


def test_same_seed_and_index_give_identical_photos() -> None:
    # Given a photo made once
    first = photo(SEED, 1)

    # When the same seed and index are rendered again
    again = make_photo(SEED, 1, max_long_side=LONG_SIDE)

    # Then the JPEG bytes and the truth are identical
    assert again.jpeg == first.jpeg
    assert again.truth == first.truth


@pytest.mark.parametrize(("seed", "index"), [(SEED, 4), (1, 1)],
                         ids=["other-index", "other-seed"])
def test_other_seed_or_index_give_other_photos(seed: int, index: int) -> None:
    base, other = photo(SEED, 1), photo(seed, index)

    assert other.jpeg != base.jpeg
    assert truth_of(index, seed)["objects"] != truth_of(1)["objects"]
    assert truth_of(index, seed)["planogram"]["planogram_id"] == f"PG-{seed}-{index:06d}"


@pytest.mark.parametrize("index", INDICES)
def test_truth_is_json_and_describes_the_photo(index: int) -> None:
    truth = truth_of(index)

    assert json.loads(json.dumps(truth))["index"] == index
    assert (truth["truth_version"], truth["seed"], truth["index"]) == (1, SEED, index)
    assert truth["display"] in DISPLAYS
    assert truth["planogram"]["display"] == truth["display"]
    assert max(truth["upright_size"]) == LONG_SIDE
    assert truth["stored_size"] == list(oriented_size(tuple(truth["upright_size"]),
                                                      truth["exif"]["orientation"]))
    assert len(truth["shelf_lines"]) == len(truth["planogram"]["shelves"])


@pytest.mark.parametrize("index", INDICES)
def test_objects_lie_inside_the_frame_with_consistent_labels(index: int) -> None:
    truth = truth_of(index)
    w, h = truth["upright_size"]
    shelves = truth["planogram"]["shelves"]

    assert truth["objects"], "a shelf photo without products"
    for obj in truth["objects"]:
        x1, y1, x2, y2 = obj["box"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, obj
        assert obj["label"] == LABELS.index(obj["sku"])
        assert obj["status"] in OBJECT_STATUSES
        positions = shelves[obj["shelf"]]["positions"]
        assert obj["position"] is not None and 0 <= obj["position"] < len(positions)
        planned = positions[obj["position"]]["sku"]
        if obj["status"] in ("in_place", "extra"):
            assert obj["sku"] == planned
        elif obj["status"] == "misplaced":
            assert obj["sku"] not in (planned, UNKNOWN_SKU)
        else:
            assert obj["sku"] == UNKNOWN_SKU


def recount(truth: dict[str, Any]) -> dict[str, Any]:
    """Planned facings found (capped per position) / planned facings, from the objects alone."""
    shelves, found_total, planned_total = [], 0, 0
    for shelf in truth["planogram"]["shelves"]:
        found, planned, oos = 0, 0, []
        for j, pos in enumerate(shelf["positions"]):
            n = sum(1 for o in truth["objects"]
                    if o["shelf"] == shelf["index"] and o["position"] == j
                    and o["sku"] == pos["sku"])
            found += min(n, pos["facings"])
            planned += pos["facings"]
            if n == 0:
                oos.append(j)
        shelves.append({"index": shelf["index"], "planned_facings": planned, "in_place": found,
                        "out_of_stock_positions": oos})
        found_total += found
        planned_total += planned
    return {"planned_facings": planned_total, "in_place": found_total, "shelves": shelves}


@pytest.mark.parametrize("index", INDICES)
def test_expected_compliance_matches_a_recount_of_the_objects(index: int) -> None:
    # Given the truth of a photo
    truth = truth_of(index)
    expected = truth["expected"]

    # When the planned facings found in place are recounted from the objects
    mine = recount(truth)

    # Then the truth's expected compliance agrees, overall and shelf by shelf
    assert expected["planned_facings"] == mine["planned_facings"]
    assert expected["in_place"] == mine["in_place"]
    assert expected["compliance"] == pytest.approx(mine["in_place"] / mine["planned_facings"])
    assert 0 < expected["compliance"] <= 1
    assert expected["unknown_label"] == UNKNOWN_SKU
    for got, want in zip(expected["shelves"], mine["shelves"], strict=True):
        assert {k: got[k] for k in want} == want
        assert got["compliance"] == pytest.approx(want["in_place"] / want["planned_facings"])


@pytest.mark.parametrize("index", INDICES)
def test_deviations_agree_with_objects(index: int) -> None:
    truth = truth_of(index)
    shelves = truth["planogram"]["shelves"]
    at = {(o["shelf"], o["position"]) for o in truth["objects"]}

    assert truth["deviations"], "every drawn photo deviates somewhere (rate 0.1 .. 0.4)"
    for dev in truth["deviations"]:
        pos = shelves[dev["shelf"]]["positions"][dev["position"]]
        if dev["type"] == "gap":
            assert (dev["shelf"], dev["position"]) not in at, dev
            assert (dev["sku"], dev["facings"]) == (pos["sku"], pos["facings"])
            assert dev["position"] in (
                truth["expected"]["shelves"][dev["shelf"]]["out_of_stock_positions"])
        elif dev["type"] == "misplaced":
            assert dev["planned_sku"] == pos["sku"] != dev["sku"]


@pytest.mark.parametrize("index", INDICES)
def test_exif_carries_what_phones_write(index: int) -> None:
    p = photo(SEED, index)
    meta = truth_of(index)["exif"]

    with Image.open(BytesIO(p.jpeg)) as im:
        exif = im.getexif()
        sub = exif.get_ifd(TAG_EXIF_IFD)
        gps = exif.get_ifd(TAG_GPS_IFD)

    # The APP1 segment right after SOI is EXIF
    assert p.jpeg[:4] == b"\xff\xd8\xff\xe1" and p.jpeg[6:12] == b"Exif\x00\x00"
    assert exif[TAG_ORIENTATION] == meta["orientation"]
    assert (exif[TAG_MAKE], exif[TAG_MODEL]) == (meta["make"], meta["model"])
    assert sub[TAG_BODY_SERIAL] == meta["serial"]
    assert re.fullmatch(r"SN\d{10}", sub[TAG_BODY_SERIAL])
    assert sub[TAG_DATETIME_ORIGINAL] == meta["datetime_original"]
    assert re.fullmatch(r"\d{4}:\d\d:\d\d \d\d:\d\d:\d\d", sub[TAG_DATETIME_ORIGINAL])
    # GPS: references and degrees-minutes-seconds back to the drawn decimal degrees
    lat, lon = meta["gps"]
    assert (gps[1], gps[3]) == ("N" if lat >= 0 else "S", "E" if lon >= 0 else "W")
    for dms, value in ((gps[2], lat), (gps[4], lon)):
        d, m, s = (float(v) for v in dms)
        assert d + m / 60 + s / 3600 == pytest.approx(abs(value), abs=1e-5)


def quant_tables(jpeg: bytes) -> dict[int, list[int]]:
    with Image.open(BytesIO(jpeg)) as im:
        return {k: list(v) for k, v in im.quantization.items()}  # type: ignore[attr-defined]


@pytest.mark.parametrize("index", INDICES)
def test_jpeg_quality_is_drawn_and_used(index: int) -> None:
    p = photo(SEED, index)
    quality = truth_of(index)["jpeg_quality"]
    tiny = np.zeros((8, 8, 3), np.uint8)

    reference = cv2.imencode(".jpg", tiny, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()

    assert 70 <= quality <= 95
    assert quant_tables(p.jpeg) == quant_tables(reference)


def test_quality_varies_between_photos() -> None:
    assert len({truth_of(i)["jpeg_quality"] for i in INDICES}) > 1


@pytest.mark.parametrize("display", DISPLAYS)
def test_display_can_be_asked_for(display: str) -> None:
    truth: dict[str, Any] = make_photo(SEED, 2, display=display, max_long_side=LONG_SIDE).truth

    assert truth["display"] == display
    assert truth["planogram"]["display"] == display
    assert truth["planogram"]["width_cm"] == FIXTURE_WIDTH_CM[display]


def test_drawn_displays_include_both_kinds() -> None:
    assert {truth_of(i)["display"] for i in INDICES} == set(DISPLAYS)


def test_unknown_display_is_refused() -> None:
    with pytest.raises(ValueError, match="display must be one of"):
        make_photo(SEED, 0, display="pallet", max_long_side=LONG_SIDE)


@pytest.mark.parametrize(("display", "lowest"), [("gondola", 3), ("endcap", 4)])
def test_planograms_have_three_to_six_shelves(display: str, lowest: int) -> None:
    counts = set()
    width = FIXTURE_WIDTH_CM[display]
    for i in range(200):
        plan = make_planogram(np.random.default_rng(i), display, f"pg-{i}")
        counts.add(len(plan.shelves))
        assert plan.display == display and plan.width_cm == width
        assert [s.index for s in plan.shelves] == list(range(len(plan.shelves)))
        for shelf in plan.shelves:
            assert shelf.positions
            assert sum(p.facings * p.width_cm for p in shelf.positions) <= width * 0.97
            assert all(p.facings >= 1 and p.sku in SKU_IDS for p in shelf.positions)
            assert len({p.sku for p in shelf.positions}) == len(shelf.positions)

    assert counts == set(range(lowest, 7))


def test_catalog_has_enough_distinct_skus() -> None:
    ids = [s.sku_id for s in CATALOG]

    assert len(CATALOG) >= 24
    assert len(set(ids)) == len(ids)
    assert (*ids, UNKNOWN_SKU) == LABELS


def test_packshots_are_pairwise_different() -> None:
    shots = {s.sku_id: packshot(s.sku_id) for s in CATALOG}

    for a, b in combinations(shots, 2):
        img_a, img_b = shots[a][0], shots[b][0]
        assert img_a.shape != img_b.shape or not np.array_equal(img_a, img_b), (a, b)
    for img, mask in shots.values():
        assert img.dtype == np.uint8 and img.shape[:2] == mask.shape
        assert mask.max() == 255  # something is drawn


def test_training_sample_is_upright_with_boxes_inside() -> None:
    sample = make_sample(np.random.default_rng(5), "gondola", 320)

    h, w = sample.image.shape[:2]
    assert max(h, w) == 320 and sample.image.dtype == np.uint8
    assert len(sample.boxes) == len(sample.labels) > 0
    assert sample.boxes.dtype == np.float32 and sample.labels.dtype == np.int64
    x1, y1, x2, y2 = sample.boxes.T
    assert np.all((x1 >= 0) & (y1 >= 0) & (x1 < x2) & (y1 < y2) & (x2 <= w) & (y2 <= h))
    assert np.all((sample.labels >= 0) & (sample.labels < len(LABELS)))
