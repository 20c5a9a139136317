"""Box maths, NMS, letterboxing and tiling on small hand-made tables."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from pipeline.core.detections import (
    Detections,
    box_area,
    box_ioa_min,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    damp_small_boxes,
    nms,
)
from pipeline.core.letterbox import letterbox, letterbox_info, unletterbox_boxes
from pipeline.core.tiling import merge_tiles, tile_windows

Box = list[float]
UNIT = [0.0, 0.0, 10.0, 10.0]


def arr(*boxes: Box) -> npt.NDArray[np.float64]:
    return np.array(boxes, np.float64).reshape(-1, 4)


def dets(boxes: list[Box], scores: list[float], classes: list[int]) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      np.array(classes, np.int64))


# --- IoU and intersection over the smaller box ---------------------------------------------

PAIRS = {
    "identical": (UNIT, UNIT),
    "disjoint": (UNIT, [20.0, 20.0, 30.0, 30.0]),
    "half-overlap": (UNIT, [5.0, 0.0, 15.0, 10.0]),
    "contained": (UNIT, [2.0, 2.0, 7.0, 7.0]),
    "touching-edges": (UNIT, [10.0, 0.0, 20.0, 10.0]),
    "touching-corner": (UNIT, [10.0, 10.0, 20.0, 20.0]),
    "zero-area-inside": (UNIT, [5.0, 5.0, 5.0, 5.0]),
    "zero-area-both": ([5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0]),
    "zero-width-line": (UNIT, [5.0, 0.0, 5.0, 10.0]),
    "quarter-corner": (UNIT, [5.0, 5.0, 15.0, 15.0]),
    "sliver": (UNIT, [8.0, 0.0, 18.0, 10.0]),
    "inverted-box": (UNIT, [10.0, 10.0, 0.0, 0.0]),
}
IOU = {
    "identical": 1.0, "disjoint": 0.0, "half-overlap": 50 / 150, "contained": 25 / 100,
    "touching-edges": 0.0, "touching-corner": 0.0, "zero-area-inside": 0.0,
    "zero-area-both": 0.0, "zero-width-line": 0.0, "quarter-corner": 25 / 175,
    "sliver": 20 / 180, "inverted-box": 0.0,
}
IOA_MIN = {
    "identical": 1.0, "disjoint": 0.0, "half-overlap": 0.5, "contained": 1.0,
    "touching-edges": 0.0, "touching-corner": 0.0, "zero-area-inside": 0.0,
    "zero-area-both": 0.0, "zero-width-line": 0.0, "quarter-corner": 0.25, "sliver": 0.2,
    "inverted-box": 0.0,
}


@pytest.mark.parametrize(("a", "b", "expected"),
                         [(*PAIRS[k], IOU[k]) for k in PAIRS], ids=list(PAIRS))
def test_box_iou(a: Box, b: Box, expected: float) -> None:
    forward = box_iou(arr(a), arr(b))
    backward = box_iou(arr(b), arr(a))

    assert forward.shape == (1, 1)
    assert forward[0, 0] == pytest.approx(expected)
    assert backward[0, 0] == pytest.approx(expected)  # symmetric


@pytest.mark.parametrize(("a", "b", "expected"),
                         [(*PAIRS[k], IOA_MIN[k]) for k in PAIRS], ids=list(PAIRS))
def test_box_ioa_min(a: Box, b: Box, expected: float) -> None:
    assert box_ioa_min(arr(a), arr(b))[0, 0] == pytest.approx(expected)
    assert box_ioa_min(arr(b), arr(a))[0, 0] == pytest.approx(expected)


def test_box_iou_is_pairwise() -> None:
    a = arr(UNIT, [5.0, 0.0, 15.0, 10.0], [100.0, 100.0, 101.0, 101.0])
    b = arr(UNIT, [2.0, 2.0, 7.0, 7.0])

    iou = box_iou(a, b)

    assert iou.shape == (3, 2)
    np.testing.assert_allclose(iou, [[1.0, 0.25], [50 / 150, 10 / 115], [0.0, 0.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 2)


def test_box_area_treats_inverted_boxes_as_empty() -> None:
    np.testing.assert_array_equal(box_area(arr(UNIT, [4.0, 4.0, 2.0, 9.0], [0.0, 0.0, 2.5, 2.0])),
                                  [100.0, 0.0, 5.0])


# --- NMS -------------------------------------------------------------------------------------

A = [0.0, 0.0, 10.0, 10.0]
A_SHIFTED = [1.0, 0.0, 11.0, 10.0]  # IoU with A = 90 / 110
A_HALF = [0.0, 0.0, 10.0, 5.0]  # IoU with A = exactly 0.5
FAR = [50.0, 50.0, 60.0, 60.0]
INSIDE = [2.0, 2.0, 6.0, 6.0]  # IoU with A 0.16, inside it


@pytest.mark.parametrize(("boxes", "scores", "classes", "iou_threshold", "kept"), [
    ([A, A_SHIFTED], [0.9, 0.8], [0, 0], 0.5, [0]),
    ([A, A_SHIFTED], [0.9, 0.8], [0, 1], 0.5, [0, 1]),
    ([A, A_SHIFTED], [0.9, 0.8], None, 0.5, [0]),
    ([A, A_SHIFTED], [0.7, 0.8], [0, 0], 0.5, [1]),
    ([A, A_HALF], [0.9, 0.8], [0, 0], 0.5, [0, 1]),
    ([A, A_HALF], [0.9, 0.8], [0, 0], 0.4999, [0]),
    ([A, FAR, A_SHIFTED], [0.3, 0.9, 0.6], [0, 0, 0], 0.5, [1, 2]),
    ([FAR, A, INSIDE], [0.2, 0.5, 0.9], None, 0.5, [2, 1, 0]),
    ([A, A, A], [0.5, 0.5, 0.5], [0, 0, 0], 0.5, [0]),
    ([A, A, A], [0.5, 0.5, 0.5], [2, 0, 1], 0.5, [0, 1, 2]),
    ([A, [5.0, 0.0, 15.0, 10.0], [10.0, 0.0, 20.0, 10.0]], [0.9, 0.8, 0.7], None, 0.3, [0, 2]),
    ([[-100.0, -100.0, 0.0, 0.0], [-100.0, -100.0, 0.0, 0.0]], [0.9, 0.8], [0, 1], 0.5,
     [0, 1]),
    ([[-100.0, -100.0, 0.0, 0.0], [-100.0, -100.0, 0.0, 0.0]], [0.9, 0.8], [0, 0], 0.5, [0]),
], ids=["same-class-duplicate", "class-aware-keeps-other-class", "agnostic-suppresses",
        "best-score-wins-whatever-its-index", "iou-equal-to-threshold-kept",
        "iou-above-threshold-removed", "kept-in-score-order", "disjoint-all-kept-by-score",
        "ties-keep-first-index", "three-classes-same-box", "greedy-chain",
        "negative-coordinates-class-aware", "negative-coordinates-same-class"])
def test_nms(boxes: list[Box], scores: list[float], classes: list[int] | None,
             iou_threshold: float, kept: list[int]) -> None:
    class_ids = None if classes is None else np.array(classes, np.int64)

    keep = nms(xyxy=arr(*boxes), scores=np.array(scores), iou_threshold=iou_threshold,
               class_ids=class_ids)

    assert keep.dtype == np.intp
    assert keep.tolist() == kept


@pytest.mark.parametrize(("use_min_area", "kept"), [(False, [1, 0]), (True, [1])],
                         ids=["iou-keeps-box-inside", "min-area-drops-box-inside"])
def test_nms_min_area(use_min_area: bool, kept: list[int]) -> None:
    keep = nms(xyxy=arr(INSIDE, A), scores=np.array([0.5, 0.9]), iou_threshold=0.5,
               use_min_area=use_min_area)

    assert keep.tolist() == kept


@pytest.mark.parametrize("class_ids", [None, np.zeros(0, np.int64)], ids=["agnostic", "aware"])
def test_nms_empty(class_ids: npt.NDArray[np.int64] | None) -> None:
    keep = nms(xyxy=np.zeros((0, 4)), scores=np.zeros(0), iou_threshold=0.5,
               class_ids=class_ids)

    assert keep.shape == (0,)
    assert keep.dtype == np.intp


# --- clipping, conversion, containers -------------------------------------------------------

@pytest.mark.parametrize(("box", "clipped"), [
    ([10.0, 20.0, 30.0, 40.0], [10.0, 20.0, 30.0, 40.0]),
    ([-5.0, -1.0, 30.0, 40.0], [0.0, 0.0, 30.0, 40.0]),
    ([90.0, 40.0, 120.0, 70.0], [90.0, 40.0, 100.0, 50.0]),
    ([-20.0, -20.0, 200.0, 200.0], [0.0, 0.0, 100.0, 50.0]),
    ([150.0, 60.0, 180.0, 90.0], [100.0, 50.0, 100.0, 50.0]),
], ids=["inside", "negative", "beyond-right-bottom", "larger-than-image", "outside"])
def test_clip_boxes(box: Box, clipped: Box) -> None:
    original = np.array([box], np.float64)

    out = clip_boxes(xyxy=original, size_wh=(100, 50))

    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [clipped])
    np.testing.assert_array_equal(original, [box])  # input untouched


@pytest.mark.parametrize(("cxcywh", "xyxy"), [
    ([[10.0, 20.0, 4.0, 6.0]], [[8.0, 17.0, 12.0, 23.0]]),
    ([[0.0, 0.0, 10.0, 2.0], [5.5, 5.5, 1.0, 3.0]], [[-5.0, -1.0, 5.0, 1.0],
                                                      [5.0, 4.0, 6.0, 7.0]]),
    ([1.0, 2.0, 0.0, 0.0], [[1.0, 2.0, 1.0, 2.0]]),
], ids=["one", "two-with-negative-corner", "flat-input-zero-size"])
def test_cxcywh_to_xyxy(cxcywh: list[float], xyxy: list[Box]) -> None:
    out = cxcywh_to_xyxy(np.array(cxcywh))

    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, xyxy)


@pytest.mark.parametrize(("box", "score", "power", "threshold", "damped"), [
    ([0, 0, 20, 40], 0.8, 0.5, 0.4, 0.8),  # short side 20 >= 16: untouched
    ([0, 0, 16, 16], 0.8, 0.5, 0.4, 0.8),  # exactly at px
    ([0, 0, 40, 4], 0.8, 0.5, 0.4, 0.4),  # short side 4: (1/4) ** 0.5 = 0.5
    ([0, 0, 9, 30], 0.6, 1.0, 0.3, 0.3375),  # linear
    ([5, 5, 5, 30], 0.9, 0.5, 0.4, None),  # no width: score 0, dropped
    ([0, 0, 8, 8], 0.5, 0.5, 0.4, None),  # 0.354 < the threshold 0.4: dropped
])
def test_damp_small_boxes(box: Box, score: float, power: float, threshold: float,
                          damped: float | None) -> None:
    det = dets([box, [0, 0, 50, 50]], [score, 0.9], [0, 1])

    out = damp_small_boxes(det, px=16, power=power, score_threshold=threshold)

    expected = [] if damped is None else [damped]
    np.testing.assert_allclose(out.scores, [*expected, 0.9], rtol=1e-6)
    assert out.class_ids.tolist() == [0, 1][-len(out):]
    assert out.scores.dtype == np.float32


def test_detections_empty_take_and_concat() -> None:
    a = dets([A, FAR], [0.9, 0.4], [3, 1])
    b = dets([INSIDE], [0.7], [2])

    both = Detections.concat([a, Detections.empty(), b])
    picked = both.take(np.array([2, 0]))

    assert len(Detections.empty()) == 0
    assert len(both) == 3
    assert both.xyxy.dtype == np.float32 and both.class_ids.dtype == np.int64
    np.testing.assert_array_equal(picked.xyxy, [INSIDE, A])
    assert picked.class_ids.tolist() == [2, 3]
    assert len(Detections.concat([])) == 0


# --- letterbox -------------------------------------------------------------------------------

LETTERBOX_CASES = [
    ((640, 480), (320, 320), 0.5, 0, 40),
    ((480, 640), (320, 320), 0.5, 40, 0),
    ((500, 500), (320, 320), 0.64, 0, 0),
    ((100, 50), (320, 320), 3.2, 0, 80),
    ((641, 479), (416, 256), 256 / 479, 36, 0),
    ((320, 320), (320, 320), 1.0, 0, 0),
]
LETTERBOX_IDS = ["landscape", "portrait", "square", "upscale", "odd-sizes", "same-size"]


@pytest.mark.parametrize(("size_wh", "target_wh", "scale", "pad_x", "pad_y"), LETTERBOX_CASES,
                         ids=LETTERBOX_IDS)
def test_letterbox_info(size_wh: tuple[int, int], target_wh: tuple[int, int], scale: float,
                        pad_x: int, pad_y: int) -> None:
    info = letterbox_info(size_wh=size_wh, target_wh=target_wh)

    assert info.scale == pytest.approx(scale)
    assert (info.pad_x, info.pad_y) == (pad_x, pad_y)
    assert info.size_wh == size_wh


@pytest.mark.parametrize(("size_wh", "target_wh", "scale", "pad_x", "pad_y"), LETTERBOX_CASES,
                         ids=LETTERBOX_IDS)
def test_letterbox_image_and_box_round_trip(size_wh: tuple[int, int], target_wh: tuple[int, int],
                                            scale: float, pad_x: int, pad_y: int) -> None:
    # Given a flat image of one colour
    w, h = size_wh
    image = np.full((h, w, 3), (10, 200, 30), np.uint8)

    # When it is letterboxed with a custom pad value
    out, info = letterbox(image, target_wh=target_wh, pad_value=7)

    # Then the resized image sits at the pad offset and everything else is padding
    tw, th = target_wh
    nw, nh = round(w * scale), round(h * scale)
    assert out.shape == (th, tw, 3)
    assert info == letterbox_info(size_wh=size_wh, target_wh=target_wh)
    inner = out[pad_y:pad_y + nh, pad_x:pad_x + nw]
    assert np.all(inner == (10, 200, 30))
    assert int(np.all(out == (10, 200, 30), axis=2).sum()) == nw * nh
    assert int(np.all(out == 7, axis=2).sum()) == tw * th - nw * nh

    # And boxes mapped into the model input come back to the original pixels
    boxes = np.array([[0, 0, w, h], [w * 0.1, h * 0.2, w * 0.6, h * 0.9]], np.float32)
    model = boxes * np.float32(info.scale) + np.array([pad_x, pad_y, pad_x, pad_y], np.float32)
    np.testing.assert_allclose(unletterbox_boxes(model, info), boxes, atol=1e-3)


def test_letterbox_same_size_is_unchanged() -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)

    out, info = letterbox(image, target_wh=(48, 32))

    assert info.scale == 1.0
    np.testing.assert_array_equal(out, image)


def test_unletterbox_clips_to_the_image() -> None:
    info = letterbox_info(size_wh=(640, 480), target_wh=(320, 320))  # scale 0.5, pad_y 40

    out = unletterbox_boxes(np.array([[-10.0, 10.0, 330.0, 300.0]]), info)

    np.testing.assert_allclose(out, [[0.0, 0.0, 640.0, 480.0]])


@pytest.mark.parametrize("size_wh", [(0, 10), (10, 0), (-1, 5)], ids=["no-width", "no-height",
                                                                       "negative"])
def test_letterbox_info_rejects_empty_images(size_wh: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        letterbox_info(size_wh=size_wh, target_wh=(320, 320))


# --- tiling ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("size_wh", "grid", "overlap", "windows"), [
    ((640, 480), (1, 1), 0.2, [(0, 0, 640, 480)]),
    ((100, 50), (2, 1), 0.0, [(0, 0, 50, 50), (50, 0, 100, 50)]),
    ((480, 320), (2, 1), 0.5, [(0, 0, 320, 320), (160, 0, 480, 320)]),
    ((1000, 600), (2, 2), 0.2, [(0, 0, 556, 333), (444, 0, 1000, 333),
                                (0, 267, 556, 600), (444, 267, 1000, 600)]),
    ((90, 300), (1, 3), 0.0, [(0, 0, 90, 100), (0, 100, 90, 200), (0, 200, 90, 300)]),
], ids=["single", "two-columns-no-overlap", "half-overlap", "two-by-two", "three-rows"])
def test_tile_windows_table(size_wh: tuple[int, int], grid: tuple[int, int], overlap: float,
                            windows: list[tuple[int, int, int, int]]) -> None:
    assert tile_windows(size_wh=size_wh, grid=grid, overlap=overlap) == windows


@pytest.mark.parametrize(("size_wh", "grid", "overlap"), [
    ((4000, 3000), (3, 2), 0.2),
    ((1200, 1600), (2, 3), 0.25),
    ((641, 479), (4, 4), 0.1),
    ((333, 777), (2, 5), 0.0),
], ids=["3x2-landscape", "2x3-portrait", "4x4-odd", "no-overlap"])
def test_tile_windows_cover_the_image_with_the_asked_overlap(
        size_wh: tuple[int, int], grid: tuple[int, int], overlap: float) -> None:
    w, h = size_wh
    cols, rows = grid

    windows = tile_windows(size_wh=size_wh, grid=grid, overlap=overlap)

    # Every pixel is covered, nothing falls outside the image
    assert len(windows) == cols * rows
    cover = np.zeros((h, w), np.uint8)
    for x1, y1, x2, y2 in windows:
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        cover[y1:y2, x1:x2] += 1
    assert cover.min() >= 1
    # Windows are rows of columns, equally sized, sharing ``overlap`` of a window with the next
    tile_w, tile_h = w / (cols - (cols - 1) * overlap), h / (rows - (rows - 1) * overlap)
    for r in range(rows):
        for c in range(cols):
            x1, y1, x2, y2 = windows[r * cols + c]
            assert abs((x2 - x1) - tile_w) <= 1 and abs((y2 - y1) - tile_h) <= 1
            if c + 1 < cols:
                assert abs((x2 - windows[r * cols + c + 1][0]) - overlap * tile_w) <= 1
            if r + 1 < rows:
                assert abs((y2 - windows[(r + 1) * cols + c][1]) - overlap * tile_h) <= 1


@pytest.mark.parametrize("overlap", [1.0, -0.1, 1.5], ids=["one", "negative", "above-one"])
def test_tile_windows_rejects_bad_overlap(overlap: float) -> None:
    with pytest.raises(ValueError, match="overlap"):
        tile_windows(size_wh=(100, 100), grid=(2, 2), overlap=overlap)


LEFT, RIGHT = (0, 0, 60, 50), (40, 0, 100, 50)


def as_set(d: Detections) -> set[tuple[tuple[float, ...], float, int]]:
    return {(tuple(round(float(v), 3) for v in box), round(float(s), 3), int(c))
            for box, s, c in zip(d.xyxy, d.scores, d.class_ids, strict=True)}


def test_merge_tiles_shifts_and_removes_duplicate_seen_in_two_tiles() -> None:
    # Given one product at [45, 10, 55, 30] inside the overlap, seen by both tiles
    left = dets([[45, 10, 55, 30], [5, 5, 15, 15]], [0.9, 0.6], [1, 0])
    right = dets([[5, 10, 15, 30], [50, 20, 58, 40]], [0.8, 0.7], [1, 0])

    # When the tiles are merged
    merged = merge_tiles([(LEFT, left), (RIGHT, right)], iou_threshold=0.6)

    # Then the duplicate collapses to its best score and the others are shifted to the image
    assert as_set(merged) == {((45, 10, 55, 30), 0.9, 1), ((5, 5, 15, 15), 0.6, 0),
                              ((90, 20, 98, 40), 0.7, 0)}


def test_merge_tiles_drops_border_fragment_contained_in_a_whole_box() -> None:
    # Given a product at [50, 10, 70, 30]: the left tile's border cuts it to [50, 10, 60, 30]
    # (with a higher score), the right tile sees it whole; a product of another class sits
    # inside the same area
    left = dets([[50, 10, 60, 30]], [0.85], [2])
    right = dets([[10, 10, 30, 30], [12, 12, 18, 18]], [0.7, 0.5], [2, 3])

    merged = merge_tiles([(LEFT, left), (RIGHT, right)], iou_threshold=0.6)

    # Then the whole box stays, the fragment (IoU only 0.5) goes, the other class stays
    assert as_set(merged) == {((50, 10, 70, 30), 0.7, 2), ((52, 12, 58, 18), 0.5, 3)}


@pytest.mark.parametrize(("containment", "count"), [(0.8, 1), (1.0, 2)],
                         ids=["fragment-dropped", "threshold-one-keeps-fragment"])
def test_merge_tiles_containment_threshold(containment: float, count: int) -> None:
    left = dets([[50, 10, 60, 30]], [0.85], [2])
    right = dets([[10, 10, 30, 30]], [0.7], [2])

    merged = merge_tiles([(LEFT, left), (RIGHT, right)], iou_threshold=0.6,
                         containment_threshold=containment)

    assert len(merged) == count


def test_merge_tiles_of_nothing() -> None:
    assert len(merge_tiles([], iou_threshold=0.5)) == 0
    assert len(merge_tiles([(LEFT, Detections.empty())], iou_threshold=0.5)) == 0
