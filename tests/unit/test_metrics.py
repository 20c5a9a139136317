"""Detection quality: 101-point average precision and COCO-style evaluation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from pipeline.core.detections import Detections
from pipeline.core.metrics import (
    IOU_THRESHOLDS,
    Truth,
    average_precision,
    evaluate_detections,
)


def dets(boxes: Sequence[Sequence[float]], scores: list[float], classes: list[int]) -> Detections:
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4),
                      np.asarray(scores, np.float32), np.asarray(classes, np.int64))


def truth(boxes: Sequence[Sequence[float]], classes: list[int]) -> Truth:
    return Truth(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64))


# Two images, three products of two classes.
BOXES_1 = [[10, 10, 110, 210], [130, 10, 230, 210]]
BOXES_2 = [[0, 0, 100, 100]]
TRUTHS = [truth(BOXES_1, [0, 1]), truth(BOXES_2, [0])]


def test_iou_thresholds_are_coco() -> None:
    assert IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


@pytest.mark.parametrize(("scores", "tp", "num_truth", "expected"), [
    ([0.9, 0.8, 0.7], [True, True, True], 3, 1.0),
    ([0.9, 0.8], [False, False], 2, 0.0),
    ([0.9], [True], 2, 51 / 101),
    ([0.9, 0.8], [True, False], 2, 51 / 101),
    ([], [], 3, 0.0),
    ([0.9, 0.8], [False, True], 1, 0.5),
    ([0.2, 0.9], [False, True], 1, 1.0),
    ([0.9, 0.8, 0.7, 0.6], [True, False, True, False], 2, (51 + 50 * 2 / 3) / 101),
], ids=["perfect", "all-false-positives", "half-recall", "half-recall-plus-fp",
        "no-detections", "fp-ranked-first", "sorted-by-score", "interpolated-envelope"])
def test_average_precision(scores: list[float], tp: list[bool], num_truth: int,
                           expected: float) -> None:
    ap = average_precision(scores=np.asarray(scores, np.float64),
                           tp=np.asarray(tp, np.bool_), num_truth=num_truth)

    assert ap == pytest.approx(expected)


@pytest.mark.parametrize(("scores", "tp"), [
    ([], []),
    ([0.9], [False]),
], ids=["no-detections", "only-false-positives"])
def test_average_precision_without_truth_is_nan(scores: list[float], tp: list[bool]) -> None:
    ap = average_precision(scores=np.asarray(scores, np.float64), tp=np.asarray(tp, np.bool_),
                           num_truth=0)

    assert math.isnan(ap)


def test_perfect_detections_score_one() -> None:
    # Given detections exactly on every truth box, with the right classes
    d = [dets(BOXES_1, [0.9, 0.8], [0, 1]), dets(BOXES_2, [0.7], [0])]

    # When evaluated
    s = evaluate_detections(d, TRUTHS)

    # Then every figure is perfect
    assert s.map50 == pytest.approx(1.0)
    assert s.map50_95 == pytest.approx(1.0)
    assert s.recall50 == pytest.approx(1.0)
    assert s.precision50 == pytest.approx(1.0)
    assert (s.images, s.truths) == (2, 3)


def test_loose_boxes_pass_at_050_but_not_at_strict_thresholds() -> None:
    # Given every box shifted right by 23 px of 100: IoU = 77*h / (123*h) ~= 0.626
    t = [truth([[0, 0, 100, 100]], [0]), truth([[50, 50, 150, 250]], [1])]
    d = [dets([[23, 0, 123, 100]], [0.9], [0]), dets([[73, 50, 173, 250]], [0.8], [1])]

    s = evaluate_detections(d, t)

    # Then they count at IoU 0.5, 0.55 and 0.6 only: 3 of the 10 thresholds
    assert s.map50 == pytest.approx(1.0)
    assert s.map50_95 == pytest.approx(0.3)
    assert s.recall50 == pytest.approx(1.0)


def test_wrong_class_scores_zero() -> None:
    # Given boxes in the right places but labelled with the other class
    d = [dets(BOXES_1, [0.9, 0.8], [1, 0]), dets(BOXES_2, [0.7], [1])]

    s = evaluate_detections(d, TRUTHS)

    assert s.map50 == 0.0
    assert s.map50_95 == 0.0
    assert s.recall50 == 0.0
    assert s.precision50 == 0.0


def test_duplicate_detection_lowers_precision_not_recall() -> None:
    # Given one product found twice (the duplicate scored lower), the rest found once
    d = [dets([*BOXES_1, BOXES_1[0]], [0.9, 0.8, 0.6], [0, 1, 0]),
         dets(BOXES_2, [0.7], [0])]

    s = evaluate_detections(d, TRUTHS)

    # Then only one of the two counts: precision drops to 3/4, recall stays whole
    assert s.recall50 == pytest.approx(1.0)
    assert s.precision50 == pytest.approx(3 / 4)
    # The duplicate ranks below every true positive, so the AP is untouched
    assert s.map50 == pytest.approx(1.0)


def test_high_scoring_duplicate_lowers_ap() -> None:
    # Given a duplicate that outranks the correct detection of another class-0 product
    d = [dets([*BOXES_1, BOXES_1[0]], [0.9, 0.8, 0.85], [0, 1, 0]),
         dets(BOXES_2, [0.7], [0])]

    s = evaluate_detections(d, TRUTHS)

    assert s.recall50 == pytest.approx(1.0)
    assert s.map50 < 1.0


def test_missed_product_lowers_recall() -> None:
    d = [dets(BOXES_1, [0.9, 0.8], [0, 1]), Detections.empty()]

    s = evaluate_detections(d, TRUTHS)

    assert s.recall50 == pytest.approx(2 / 3)
    assert s.precision50 == pytest.approx(1.0)
    # class 0: 1 of 2 found -> 51/101; class 1 perfect -> mean of the two
    assert s.map50 == pytest.approx((51 / 101 + 1.0) / 2)


def test_each_truth_is_matched_once_per_image() -> None:
    # Given two truths and two detections that both sit on the first truth
    t = [truth([[0, 0, 100, 100], [200, 0, 300, 100]], [0, 0])]
    d = [dets([[0, 0, 100, 100], [1, 1, 101, 101]], [0.9, 0.8], [0, 0])]

    s = evaluate_detections(d, t)

    assert s.recall50 == pytest.approx(0.5)
    assert s.precision50 == pytest.approx(0.5)


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="one Detections per Truth"):
        evaluate_detections([Detections.empty()], TRUTHS)


def test_nothing_at_all() -> None:
    s = evaluate_detections([], [])

    assert (s.map50, s.map50_95, s.images, s.truths) == (0.0, 0.0, 0, 0)
