"""Output decoding and the whole detector (letterbox -> ONNX Runtime -> decode -> NMS -> image
pixels) on tiny constant ONNX models whose outputs are known by construction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from onnx import TensorProto

from pipeline.core.decode import (
    DecodeError,
    box_agreement,
    decode_centernet,
    decode_end2end,
    decode_rtdetr,
    decode_yolov5,
    decode_yolov8,
)
from pipeline.core.detections import Detections
from pipeline.detect.detector import Detector
from pipeline.errors import ModelError
from tests.unit.onnx_models import Dim, constant_model, write_model_dir

F32 = npt.NDArray[np.float32]
LABELS = {"0": "SKU-A", "1": "SKU-B", "2": "SKU-C"}
NC = 3
NCHW_320: list[Dim] = [1, 3, 320, 320]
NHWC_320: list[Dim] = [1, 320, 320, 3]

# Candidates in model-input pixels (the input is 320 x 320): cx, cy, w, h, then class scores.
CANDIDATES = np.array([
    [100, 100, 40, 60, 0.90, 0.05, 0.00],  # 0: class 0
    [102, 101, 40, 60, 0.80, 0.10, 0.00],  # 1: duplicate of 0 (IoU 0.88) -> NMS removes it
    [100, 100, 40, 60, 0.10, 0.70, 0.20],  # 2: same box as 0, class 1 -> kept (class-aware)
    [200, 60, 30, 30, 0.10, 0.20, 0.05],  # 3: best score 0.2 < 0.25 -> dropped
    [250, 200, 50, 30, 0.00, 0.10, 0.50],  # 4: class 2
    [300, 270, 60, 40, 0.00, 0.60, 0.00],  # 5: class 1, runs off the image's bottom right
    [40, 60, 20, 20, 0.25, 0.00, 0.00],  # 6: score exactly at the threshold -> kept
    [120, 110, 40, 60, 0.30, 0.00, 0.00],  # 7: overlaps 0 with IoU 0.26 -> kept
], np.float32)
# A 640 x 480 image letterboxed into 320 x 320: scale 0.5, pad_y 40. Best score first.
EXPECTED_BOXES = [
    [160.0, 60.0, 240.0, 180.0],  # 0
    [160.0, 60.0, 240.0, 180.0],  # 2
    [540.0, 420.0, 640.0, 480.0],  # 5, clipped to the image
    [450.0, 290.0, 550.0, 350.0],  # 4
    [200.0, 80.0, 280.0, 200.0],  # 7
    [60.0, 20.0, 100.0, 60.0],  # 6
]
EXPECTED_CLASSES = [0, 1, 1, 2, 0, 0]
EXPECTED_SCORES = [0.9, 0.7, 0.6, 0.5, 0.3, 0.25]


def image(w: int = 640, h: int = 480) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)


def card(fmt: str, **extra: Any) -> dict[str, Any]:
    post = {"score_threshold": 0.25, "iou_threshold": 0.6, **extra.pop("postprocess", {})}
    return {"format": fmt, "input": {"channels": "RGB", **extra.pop("input", {})},
            "postprocess": post, **extra}


def detector(tmp_path: Path, name: str, outputs: list[F32], *, input_shape: list[Dim],
             card_json: dict[str, Any], input_type: int = TensorProto.FLOAT) -> Detector:
    write_model_dir(tmp_path, name, card=card_json, labels=LABELS,
                    model=constant_model(outputs, input_shape=input_shape,
                                         input_type=input_type))
    return Detector.from_dir(tmp_path, name, device="cpu")


def assert_detections(det: Detections, boxes: list[list[float]], classes: list[int],
                      scores: list[float]) -> None:
    assert det.xyxy.dtype == np.float32
    assert det.class_ids.dtype == np.int64
    np.testing.assert_allclose(det.xyxy, np.array(boxes).reshape(-1, 4), atol=1e-3)
    assert det.class_ids.tolist() == classes
    np.testing.assert_allclose(det.scores, scores, atol=1e-6)


def yolo_columns() -> F32:
    return CANDIDATES.T[None].copy()  # [1, 4 + C, N]


def yolo_rows() -> F32:
    return CANDIDATES[None].copy()  # [1, N, 4 + C]


def rtdetr_normalised() -> F32:
    q = CANDIDATES.copy()
    q[:, :4] /= 320.0
    return q[None]


@pytest.mark.parametrize(("fmt", "output", "input_shape", "post"), [
    ("yolov8", yolo_columns(), NCHW_320, {}),
    ("yolov8", yolo_columns(), NHWC_320, {}),
    ("yolov8", yolo_rows(), NCHW_320, {}),
    ("rtdetr", rtdetr_normalised(), NCHW_320, {}),
    ("rtdetr", rtdetr_normalised(), NHWC_320, {}),
    ("rtdetr", yolo_rows(), NHWC_320, {"normalized_boxes": False}),
], ids=["yolov8-nchw", "yolov8-nhwc", "yolov8-rows", "rtdetr-nchw", "rtdetr-nhwc",
        "rtdetr-pixels"])
def test_detector_maps_candidates_back_to_image_pixels(
        tmp_path: Path, fmt: str, output: F32, input_shape: list[Dim], post: dict[str, Any]
) -> None:
    # Given a model that always returns the candidate table in its format and layout
    det = detector(tmp_path, f"const-{fmt}", [output], input_shape=input_shape,
                   card_json=card(fmt, postprocess=post))

    # When it runs on a 640 x 480 image (letterboxed to 320 x 320: scale 0.5, pad_y 40)
    found = det.detect(image())

    # Then low scores and same-class duplicates are gone; the rest is in image pixels
    assert_detections(found, EXPECTED_BOXES, EXPECTED_CLASSES, EXPECTED_SCORES)
    assert det.geometry().layout == ("NCHW" if input_shape == NCHW_320 else "NHWC")


def test_small_box_damping_lowers_small_boxes_scores_before_the_threshold(tmp_path: Path
                                                                         ) -> None:
    # Scores of boxes under 40 model-input pixels across scaled by short side / 40
    det = detector(tmp_path, "damped", [yolo_columns()], input_shape=NCHW_320,
                   card_json=card("yolov8", postprocess={"small_boxes": {"px": 40,
                                                                         "power": 1.0}}))

    found = det.detect(image())

    # Box 4 (short side 30) keeps 0.75 of its score; box 6 (20) falls under the threshold
    assert_detections(found, EXPECTED_BOXES[:5], EXPECTED_CLASSES[:5],
                      [0.9, 0.7, 0.6, 0.375, 0.3])


def test_detector_keeps_at_most_max_detections(tmp_path: Path) -> None:
    det = detector(tmp_path, "capped", [yolo_columns()], input_shape=NCHW_320,
                   card_json=card("yolov8", postprocess={"max_detections": 2}))

    found = det.detect(image())

    assert_detections(found, EXPECTED_BOXES[:2], EXPECTED_CLASSES[:2], EXPECTED_SCORES[:2])


def test_detector_score_threshold_from_the_card(tmp_path: Path) -> None:
    det = detector(tmp_path, "strict", [yolo_columns()], input_shape=NCHW_320,
                   card_json=card("yolov8", postprocess={"score_threshold": 0.55}))

    found = det.detect(image())

    assert found.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])


def test_detector_centernet(tmp_path: Path) -> None:
    # Given a centernet model with a 4 x 4 grid: a peak of class 2 with a weaker neighbour,
    # and a separate peak of class 0
    scores = np.zeros((1, NC, 4, 4), np.float32)
    scores[0, 2, 0, 0], scores[0, 2, 0, 1] = 0.8, 0.6
    scores[0, 0, 3, 3], scores[0, 1, 3, 3] = 0.5, 0.4
    boxes = np.zeros((1, 4, 4, 4), np.float32)
    boxes[0, :, 0, 0] = [10, 50, 50, 90]
    boxes[0, :, 0, 1] = [12, 50, 52, 90]
    boxes[0, :, 3, 3] = [200, 200, 260, 300]
    det = detector(tmp_path, "centernet", [scores, boxes], input_shape=NCHW_320,
                   card_json=card("centernet"))

    # When it runs on a 640 x 480 image
    found = det.detect(image())

    # Then one detection per peak, mapped back through the letterbox
    assert_detections(found, [[20, 20, 100, 100], [400, 320, 520, 480]], [2, 0], [0.8, 0.5])


def test_detector_centernet_weighs_scores_by_box_agreement(tmp_path: Path) -> None:
    # Given the same model, its card weighing each peak by its neighbours' agreement
    scores = np.zeros((1, NC, 4, 4), np.float32)
    scores[0, 2, 0, 0], scores[0, 2, 0, 1] = 0.8, 0.6
    scores[0, 0, 3, 3] = 0.5
    boxes = np.zeros((1, 4, 4, 4), np.float32)
    boxes[0, :, 0, 0] = [10, 50, 50, 90]
    boxes[0, :, 0, 1] = [12, 50, 52, 90]  # IoU 1,520 / 1,680 with the peak's box
    boxes[0, :, 3, 3] = [200, 200, 260, 300]
    det = detector(tmp_path, "centernet", [scores, boxes], input_shape=NCHW_320,
                   card_json=card("centernet", postprocess={"box_agreement": 1.0}))

    # When it runs
    found = det.detect(image())

    # Then the first peak's score is scaled by the IoU with its one scored neighbour; the
    # second, whose neighbours have no score, keeps its own
    assert_detections(found, [[20, 20, 100, 100], [400, 320, 520, 480]], [2, 0],
                      [0.8 * 1520 / 1680, 0.5])


def test_detector_centernet_whose_labels_do_not_name_its_classes_says_so(
        tmp_path: Path) -> None:
    det = detector(tmp_path, "more-classes", [np.zeros((1, NC + 2, 4, 4), np.float32),
                                              np.zeros((1, 4, 4, 4), np.float32)],
                   input_shape=NCHW_320, card_json=card("centernet"))

    with pytest.raises(ModelError, match=f"{NC + 2} classes, its labels.json names {NC}"):
        det.detect(image())


def test_detector_centernet_needs_two_outputs(tmp_path: Path) -> None:
    det = detector(tmp_path, "one-output", [np.zeros((1, NC, 4, 4), np.float32)],
                   input_shape=NCHW_320, card_json=card("centernet"))

    with pytest.raises(ModelError, match="scores and boxes"):
        det.detect(image())


def test_detector_rejects_non_bgr_images(tmp_path: Path) -> None:
    det = detector(tmp_path, "gray", [yolo_columns()], input_shape=NCHW_320,
                   card_json=card("yolov8"))

    with pytest.raises(ValueError, match="BGR"):
        det.detect(np.zeros((480, 640), np.uint8))


# --- tiling ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("whole_image", "expected"), [
    (True, [[0, 40, 400, 240], [320, 100, 520, 200]]),
    (False, [[0, 100, 200, 200], [320, 100, 520, 200]]),
], ids=["with-whole-image", "tiles-only"])
def test_detector_tiles_and_merges(tmp_path: Path, whole_image: bool,
                                   expected: list[list[float]]) -> None:
    # Given a model that always sees one box [0, 100, 200, 200] of class 0 in its 320 x 320 input
    box = np.array([[100, 150, 200, 100, 0.9, 0.0, 0.0]], np.float32)
    tiling = {"grid": [2, 1], "overlap": 0.0, "whole_image": whole_image}
    det = detector(tmp_path, "tiled", [box.T[None].copy()], input_shape=NCHW_320,
                   card_json=card("yolov8", tiling=tiling))

    # When a 640 x 320 image is cut into two 320 x 320 tiles (scale 1) and, optionally, also
    # seen whole (scale 0.5, pad_y 80)
    found = det.detect(image(640, 320))

    # Then each tile's box is shifted by its window: [0, 100, 200, 200] and [320, 100, 520, 200];
    # the whole view gives [0, 40, 400, 240], which contains the first tile's box (a fragment,
    # dropped) but only 40 % of the second's (kept)
    order = np.lexsort((found.xyxy[:, 1], found.xyxy[:, 0]))
    np.testing.assert_allclose(found.xyxy[order], expected, atol=1e-3)
    assert found.class_ids.tolist() == [0, 0]
    np.testing.assert_allclose(found.scores, [0.9, 0.9], atol=1e-6)


def test_detector_tiling_orders_by_score_and_caps(tmp_path: Path) -> None:
    boxes = np.array([[100, 150, 200, 100, 0.9, 0.0, 0.0],
                      [260, 150, 40, 40, 0.0, 0.0, 0.4]], np.float32)
    tiling = {"grid": [2, 1], "overlap": 0.0, "whole_image": True}
    det = detector(tmp_path, "tiled-cap", [boxes.T[None].copy()], input_shape=NCHW_320,
                   card_json=card("yolov8", tiling=tiling, postprocess={"max_detections": 2}))

    found = det.detect(image(640, 320))

    # 2 boxes of class 0 survive as above, plus 3 views of the class 2 box; each of the two
    # windows may hold the card's 2 (a panorama of bays holds more products than one), so 4
    # are kept, best first
    assert len(found) == 4
    assert found.scores.tolist() == pytest.approx([0.9, 0.9, 0.4, 0.4])
    assert found.class_ids.tolist() == [0, 0, 2, 2]


# --- input geometry and tensors --------------------------------------------------------------

@pytest.mark.parametrize(("input_shape", "input_type", "layout", "size", "dtype"), [
    ([1, 3, 256, 320], TensorProto.FLOAT, "NCHW", (320, 256), "tensor(float)"),
    ([1, 256, 320, 3], TensorProto.FLOAT, "NHWC", (320, 256), "tensor(float)"),
    ([1, 1, 96, 64], TensorProto.FLOAT, "NCHW", (64, 96), "tensor(float)"),
    ([1, 96, 64, 1], TensorProto.FLOAT, "NHWC", (64, 96), "tensor(float)"),
    ([1, 256, 320, 3], TensorProto.UINT8, "NHWC", (320, 256), "tensor(uint8)"),
], ids=["nchw", "nhwc", "nchw-gray", "nhwc-gray", "nhwc-uint8"])
def test_geometry_read_from_the_graph(tmp_path: Path, input_shape: list[Dim], input_type: int,
                                      layout: str, size: tuple[int, int], dtype: str) -> None:
    det = detector(tmp_path, "geo", [yolo_columns()], input_shape=input_shape,
                   card_json=card("yolov8"), input_type=input_type)

    g = det.geometry()

    assert (g.name, g.layout, g.size_wh, g.dtype) == ("images", layout, size, dtype)
    assert det.geometry() is g  # read once


@pytest.mark.parametrize(("input_shape", "card_input", "layout", "size"), [
    (["n", 3, "h", "w"], {"size": [416, 288]}, "NCHW", (416, 288)),
    (["n", "h", "w", 3], {"size": [416, 288]}, "NHWC", (416, 288)),
    (["n", "a", "b", "c"], {"size": [416, 288], "layout": "NHWC"}, "NHWC", (416, 288)),
    ([1, 3, 256, 320], {"size": [160, 128]}, "NCHW", (160, 128)),
], ids=["dynamic-nchw", "dynamic-nhwc", "layout-from-card", "card-size-wins"])
def test_geometry_card_fills_dynamic_axes(tmp_path: Path, input_shape: list[Dim],
                                          card_input: dict[str, Any], layout: str,
                                          size: tuple[int, int]) -> None:
    det = detector(tmp_path, "dyn", [yolo_columns()], input_shape=input_shape,
                   card_json=card("yolov8", input=card_input))

    g = det.geometry()

    assert (g.layout, g.size_wh) == (layout, size)


@pytest.mark.parametrize(("input_shape", "message"), [
    ([1, 3, "h", "w"], "dynamic input size"),
    ([1, 3, 320], "must be 4-D"),
], ids=["dynamic-without-card-size", "three-dims"])
def test_geometry_errors(tmp_path: Path, input_shape: list[Dim], message: str) -> None:
    det = detector(tmp_path, "bad", [yolo_columns()], input_shape=input_shape,
                   card_json=card("yolov8"))

    with pytest.raises(ModelError, match=message):
        det.geometry()


def test_dynamic_model_runs_at_the_card_size(tmp_path: Path) -> None:
    det = detector(tmp_path, "dyn-run", [yolo_columns()], input_shape=["n", 3, "h", "w"],
                   card_json=card("yolov8", input={"size": [320, 320]}))

    assert_detections(det.detect(image()), EXPECTED_BOXES, EXPECTED_CLASSES, EXPECTED_SCORES)


# B, G, R planes of a 2 x 3 image
PIXELS = np.stack([np.full((2, 3), 10), np.full((2, 3), 20), np.full((2, 3), 30)],
                  axis=2).astype(np.uint8)


@pytest.mark.parametrize(("input_shape", "input_type", "card_input", "first_plane", "dtype"), [
    ([1, 3, 2, 3], TensorProto.FLOAT, {}, 30 / 255, np.float32),
    ([1, 3, 2, 3], TensorProto.FLOAT, {"channels": "BGR"}, 10 / 255, np.float32),
    ([1, 3, 2, 3], TensorProto.FLOAT, {"scale": 1.0, "mean": [20, 0, 0], "std": [2, 1, 1]},
     5.0, np.float32),
    ([1, 3, 2, 3], TensorProto.UINT8, {}, 30, np.uint8),
    ([1, 2, 3, 3], TensorProto.FLOAT, {}, 30 / 255, np.float32),
    ([1, 2, 3, 3], TensorProto.UINT8, {"channels": "BGR"}, 10, np.uint8),
], ids=["nchw-rgb", "nchw-bgr", "mean-std", "uint8-raw", "nhwc-rgb", "nhwc-uint8-bgr"])
def test_to_tensor(tmp_path: Path, input_shape: list[Dim], input_type: int,
                   card_input: dict[str, Any], first_plane: float, dtype: type) -> None:
    det = detector(tmp_path, "tensor", [yolo_columns()], input_shape=input_shape,
                   card_json=card("yolov8", input=card_input), input_type=input_type)

    t = det.to_tensor(PIXELS)

    assert t.dtype == dtype
    assert list(t.shape) == input_shape
    assert t.flags["C_CONTIGUOUS"]
    first = np.asarray(t[0, 0] if det.geometry().layout == "NCHW" else t[0, :, :, 0],
                       np.float64)
    np.testing.assert_allclose(first, np.full((2, 3), first_plane), rtol=1e-6)


# --- decoders on hand-made arrays ------------------------------------------------------------

def centernet_arrays() -> tuple[F32, F32]:
    """2 classes on a 5 x 6 grid; each cell's box encodes its position: [x, y, x + 1, y + 1]."""
    scores = np.zeros((1, 2, 5, 6), np.float32)
    scores[0, 1, 1, 1] = 0.9  # a peak of class 1 ...
    scores[0, 0, 1, 2] = 0.8  # ... and its neighbour of class 0: not a local maximum
    scores[0, 0, 3, 4], scores[0, 1, 3, 4] = 0.6, 0.3  # a peak where class 0 beats class 1
    scores[0, 1, 4, 0] = 0.2  # an isolated peak below the threshold
    scores[0, 0, 0, 5] = 0.5  # a peak on the border
    yy, xx = np.mgrid[0:5, 0:6].astype(np.float32)
    boxes = np.stack([xx, yy, xx + 1, yy + 1])[None]
    return scores, boxes


def test_decode_centernet_picks_peaks_and_argmax_class() -> None:
    scores, boxes = centernet_arrays()

    det = decode_centernet(scores=scores, boxes=boxes, score_threshold=0.25)

    assert_detections(det, [[1, 1, 2, 2], [4, 3, 5, 4], [5, 0, 6, 1]], [1, 0, 0],
                      [0.9, 0.6, 0.5])


@pytest.mark.parametrize(("threshold", "limit", "count"), [
    (0.25, 1, 1), (0.25, 2, 2), (0.1, 1000, 4), (0.95, 1000, 0),
], ids=["top-1", "top-2", "low-threshold", "nothing-passes"])
def test_decode_centernet_threshold_and_limit(threshold: float, limit: int, count: int) -> None:
    scores, boxes = centernet_arrays()

    det = decode_centernet(scores=scores, boxes=boxes, score_threshold=threshold,
                           max_candidates=limit)

    assert len(det) == count
    expected = [0.9, 0.6, 0.5, 0.2][:count]
    np.testing.assert_allclose(det.scores, expected, atol=1e-6)


@pytest.mark.parametrize(("scores", "boxes"), [
    (np.zeros((2, 5, 6), np.float32), np.zeros((1, 4, 5, 6), np.float32)),
    (np.zeros((1, 2, 5, 6), np.float32), np.zeros((1, 2, 5, 6), np.float32)),
], ids=["scores-3d", "boxes-not-4-channels"])
def test_decode_centernet_shape_errors(scores: F32, boxes: F32) -> None:
    with pytest.raises(DecodeError):
        decode_centernet(scores=scores, boxes=boxes, score_threshold=0.25)


def agreement_grid(neighbour: list[float], score: float = 0.5) -> tuple[F32, F32]:
    """A 3 x 3 grid: the centre cell's box is [10, 10, 20, 20]; every other cell has
    ``score`` and the box ``neighbour``."""
    best = np.full((3, 3), score, np.float32)
    best[1, 1] = 0.9
    boxes = np.empty((4, 3, 3), np.float32)
    boxes[:] = np.array(neighbour, np.float32)[:, None, None]
    boxes[:, 1, 1] = [10, 10, 20, 20]
    return best, boxes


@pytest.mark.parametrize(("neighbour", "score", "expected"), [
    ([10, 10, 20, 20], 0.5, 1.0),  # every neighbour regresses the same box
    ([10, 10, 20, 15], 0.5, 0.5),  # half of it: IoU 0.5
    ([30, 30, 40, 40], 0.5, 0.0),  # somewhere else
    ([30, 30, 40, 40], 0.0, 1.0),  # ... but with no score: nothing to disagree
], ids=["same", "half", "elsewhere", "unscored"])
def test_box_agreement_is_the_score_weighted_iou_of_the_neighbours(
        neighbour: list[float], score: float, expected: float) -> None:
    best, boxes = agreement_grid(neighbour, score)

    got = box_agreement(best, boxes, np.array([1]), np.array([1]))

    np.testing.assert_allclose(got, [expected], atol=1e-6)


def test_box_agreement_weighs_neighbours_by_score_and_skips_cells_off_the_grid() -> None:
    # Given a peak in the corner: three neighbours on the grid, one agreeing (score 0.6)
    # and two disagreeing (0.2 each)
    best = np.zeros((3, 3), np.float32)
    best[0, 0], best[0, 1], best[1, 0], best[1, 1] = 0.9, 0.6, 0.2, 0.2
    boxes = np.zeros((4, 3, 3), np.float32)
    boxes[:, 0, 0] = boxes[:, 0, 1] = np.array([0, 0, 8, 8], np.float32)
    boxes[:, 1, 0] = boxes[:, 1, 1] = np.array([20, 20, 28, 28], np.float32)

    got = box_agreement(best, boxes, np.array([0]), np.array([0]))

    # Then the mean is over those three alone, not the peak itself clipped in five times
    np.testing.assert_allclose(got, [0.6 / (0.6 + 0.2 + 0.2)], atol=1e-6)


@pytest.mark.parametrize(("power", "threshold", "expected"), [
    (0.0, 0.3, [0.9]),  # off: the score as it comes
    (1.0, 0.3, [0.45]),
    (2.0, 0.3, []),  # 0.9 x 0.5^2 = 0.225: under the threshold, dropped
    (2.0, 0.2, [0.225]),
], ids=["off", "power-1", "power-2-dropped", "power-2-kept"])
def test_decode_centernet_scales_peaks_by_agreement_before_the_threshold(
        power: float, threshold: float, expected: list[float]) -> None:
    best, boxes = agreement_grid([10, 10, 20, 15], score=0.5)

    det = decode_centernet(scores=best[None, None], boxes=boxes[None],
                           score_threshold=threshold, agreement=power)

    np.testing.assert_allclose(det.scores, expected, atol=1e-6)
    assert len(det) == len(expected)


@pytest.mark.parametrize("output", [yolo_columns(), yolo_rows()], ids=["columns", "rows"])
def test_decode_yolov8_in_input_pixels(output: F32) -> None:
    det = decode_yolov8(output=output, num_classes=NC, score_threshold=0.25)

    # Before NMS: everything but candidate 3, best first, boxes in model-input pixels
    assert det.scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.25])
    assert det.class_ids.tolist() == [0, 0, 1, 1, 2, 0, 0]
    np.testing.assert_allclose(det.xyxy[0], [80, 70, 120, 130])
    np.testing.assert_allclose(det.xyxy[3], [270, 250, 330, 290])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_decode_yolov8_drops_boxes_that_are_not_numbers(bad: float) -> None:
    output = yolo_columns().copy()
    output[0, 2, 0] = bad  # the best candidate's width
    det = decode_yolov8(output=output, num_classes=NC, score_threshold=0.25)

    assert det.scores.tolist() == pytest.approx([0.8, 0.7, 0.6, 0.5, 0.3, 0.25])
    assert np.isfinite(det.xyxy).all()


def test_decode_yolov8_max_candidates() -> None:
    det = decode_yolov8(output=yolo_columns(), num_classes=NC, score_threshold=0.0,
                        max_candidates=3)

    assert det.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])


@pytest.mark.parametrize("output", [
    np.zeros((1, 8, 9), np.float32), np.zeros((8, 7), np.float32),
    np.zeros((2, 7, 8), np.float32),
], ids=["wrong-class-count", "two-dims", "batch-of-two"])
def test_decode_yolov8_shape_errors(output: F32) -> None:
    with pytest.raises(DecodeError):
        decode_yolov8(output=output, num_classes=NC, score_threshold=0.25)


@pytest.mark.parametrize(("output", "normalized", "input_wh", "first_box"), [
    (rtdetr_normalised(), True, (320, 320), [80, 70, 120, 130]),
    (rtdetr_normalised(), True, (640, 320), [160, 70, 240, 130]),
    (yolo_rows(), False, (999, 999), [80, 70, 120, 130]),
], ids=["normalised-square", "normalised-wide-input", "pixels"])
def test_decode_rtdetr(output: F32, normalized: bool, input_wh: tuple[int, int],
                       first_box: list[float]) -> None:
    det = decode_rtdetr(output=output, num_classes=NC, score_threshold=0.25, input_wh=input_wh,
                        normalized=normalized)

    assert len(det) == 7
    np.testing.assert_allclose(det.xyxy[0], first_box, atol=1e-4)
    assert det.class_ids[0] == 0


def test_decode_rtdetr_shape_error() -> None:
    with pytest.raises(DecodeError):
        decode_rtdetr(output=yolo_columns(), num_classes=NC, score_threshold=0.25,
                      input_wh=(320, 320))


def yolov5_rows() -> F32:
    """``[1, N, 5 + C]``: an objectness of 1 before the class scores, and one candidate whose
    class score 0.9 falls under the threshold once its objectness 0.2 is applied."""
    rows = np.insert(CANDIDATES, 4, 1.0, axis=1)
    extra = np.array([[160, 160, 30, 30, 0.2, 0.9, 0.0, 0.0]], np.float32)
    return np.concatenate([rows, extra])[None]


@pytest.mark.parametrize(("normalized", "input_wh"), [(False, None), (True, (320, 320))],
                         ids=["pixels", "normalised"])
def test_decode_yolov5_scores_are_objectness_times_class(
        normalized: bool, input_wh: tuple[int, int] | None) -> None:
    out = yolov5_rows()
    if normalized:
        out[0, :, :4] /= 320
    det = decode_yolov5(output=out, num_classes=NC, score_threshold=0.25, input_wh=input_wh,
                        normalized=normalized)

    assert det.scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.25])
    assert det.class_ids.tolist() == [0, 0, 1, 1, 2, 0, 0]
    np.testing.assert_allclose(det.xyxy[0], [80, 70, 120, 130], rtol=1e-5)


def test_decode_yolov5_shape_error() -> None:
    with pytest.raises(DecodeError):
        decode_yolov5(output=yolo_rows(), num_classes=NC, score_threshold=0.25)


# NMS inside the graph: x1 y1 x2 y2 score class, best first, unused rows zero (320 x 320).
END2END = np.array([
    [80, 70, 120, 130, 0.90, 0],  # kept
    [230, 185, 270, 215, 0.70, 2],  # kept
    [10, 10, 50, 50, 0.50, 3],  # class id past the labels -> dropped
    [60, 60, 60, 90, 0.40, 1],  # no width -> dropped
    [200, 200, 260, 240, 0.20, 1],  # under the threshold -> dropped
    [0, 0, 0, 0, 0.0, 0],  # padding
    [0, 0, 0, 0, 0.0, 0],
], np.float32)[None]


@pytest.mark.parametrize(("normalized", "input_wh", "boxes"), [
    (False, (999, 999), [[80, 70, 120, 130], [230, 185, 270, 215]]),
    (True, (320, 320), [[80, 70, 120, 130], [230, 185, 270, 215]]),
    (True, (640, 320), [[160, 70, 240, 130], [460, 185, 540, 215]]),
], ids=["pixels", "normalised", "normalised-wide-input"])
def test_decode_end2end_keeps_real_rows_in_input_pixels(
        normalized: bool, input_wh: tuple[int, int], boxes: list[list[float]]) -> None:
    out = END2END.copy()
    if normalized:
        out[0, :, :4] /= 320
    det = decode_end2end(output=out, num_classes=NC, score_threshold=0.25, input_wh=input_wh,
                         normalized=normalized)

    assert_detections(det, boxes, [0, 2], [0.9, 0.7])


@pytest.mark.parametrize("output", [
    np.zeros((1, 300, 7), np.float32), np.zeros((300, 6), np.float32),
], ids=["seven-columns", "two-dims"])
def test_decode_end2end_shape_errors(output: F32) -> None:
    with pytest.raises(DecodeError):
        decode_end2end(output=output, num_classes=NC, score_threshold=0.25, input_wh=(320, 320))


def test_detector_end2end_maps_rows_back_to_image_pixels(tmp_path: Path) -> None:
    det = detector(tmp_path, "const-end2end", [END2END], input_shape=NCHW_320,
                   card_json=card("end2end"))

    # 640 x 480 letterboxed into 320 x 320: scale 0.5, pad_y 40
    assert_detections(det.detect(image()), [[160, 60, 240, 180], [460, 290, 540, 350]], [0, 2],
                      [0.9, 0.7])


@pytest.mark.parametrize(("size_wh", "grid"), [
    ((1280, 960), None),
    ((960, 1280), None),
    ((1280, 640), None),  # 2:1 is whole
    ((1920, 640), (2, 1)),
    ((3360, 640), (4, 1)),
    ((640, 1920), (1, 2)),
])
def test_a_photo_longer_than_twice_its_width_is_tiled_along(
        size_wh: tuple[int, int], grid: tuple[int, int] | None) -> None:
    from pipeline.core.tiling import strip_grid

    assert strip_grid(size_wh) == grid
