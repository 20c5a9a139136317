"""Detection quality: COCO-style average precision (101-point) and recall."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.core.detections import Detections, box_iou

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass(frozen=True)
class Truth:
    """Ground truth of one image: ``xyxy`` (N, 4) and ``class_ids`` (N,)."""

    xyxy: npt.NDArray[np.float32]
    class_ids: npt.NDArray[np.int64]


def _match(det: Detections, gt: Truth, iou_threshold: float) -> npt.NDArray[np.bool_]:
    """True positives among ``det`` (greedy by score, same class, each truth used once)."""
    tp = np.zeros(len(det), np.bool_)
    if len(det) == 0 or gt.xyxy.shape[0] == 0:
        return tp
    iou = box_iou(det.xyxy, gt.xyxy)
    iou[det.class_ids[:, None] != gt.class_ids[None, :]] = 0.0
    used = np.zeros(gt.xyxy.shape[0], np.bool_)
    for i in np.argsort(-det.scores, kind="stable"):
        cand = np.where(used, 0.0, iou[i])
        j = int(np.argmax(cand))
        if cand[j] >= iou_threshold:
            used[j] = True
            tp[i] = True
    return tp


def average_precision(*, scores: npt.NDArray[np.floating], tp: npt.NDArray[np.bool_],
                      num_truth: int) -> float:
    """Area under the interpolated precision-recall curve, sampled at 101 recall points."""
    if num_truth == 0:
        return float("nan")
    if np.asarray(scores).size == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(tp)[order].astype(np.float64)
    ctp = np.cumsum(hits)
    cfp = np.cumsum(1.0 - hits)
    recall = ctp / num_truth
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
    points = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, points, side="left")
    sampled = np.where(idx < envelope.size, envelope[np.minimum(idx, envelope.size - 1)], 0.0)
    return float(sampled.mean())


@dataclass(frozen=True)
class DetectionScores:
    map50: float
    map50_95: float
    recall50: float
    precision50: float
    images: int
    truths: int


def evaluate_detections(dets: Sequence[Detections], truths: Sequence[Truth]
                        ) -> DetectionScores:
    """mAP@0.5, mAP@0.5:0.95 (mean over classes present in the truth), recall and precision."""
    if len(dets) != len(truths):
        raise ValueError("one Detections per Truth")
    gt_cls = (np.concatenate([t.class_ids for t in truths]) if truths
              else np.zeros(0, np.int64))
    classes = np.unique(gt_cls)
    maps = []
    recall50 = precision50 = 0.0
    for thr in IOU_THRESHOLDS:
        tps = [_match(d, t, thr) for d, t in zip(dets, truths, strict=True)]
        all_tp = np.concatenate(tps) if tps else np.zeros(0, np.bool_)
        all_scores = np.concatenate([d.scores for d in dets]) if dets else np.zeros(0)
        all_cls = np.concatenate([d.class_ids for d in dets]) if dets else np.zeros(0, np.int64)
        aps = [average_precision(scores=all_scores[all_cls == c], tp=all_tp[all_cls == c],
                                 num_truth=int((gt_cls == c).sum())) for c in classes]
        maps.append(float(np.nanmean(aps)) if aps else 0.0)
        if thr == 0.5:
            n_gt = int(gt_cls.size)
            recall50 = float(all_tp.sum() / n_gt) if n_gt else 1.0
            precision50 = float(all_tp.mean()) if all_tp.size else 1.0
    return DetectionScores(maps[0], float(np.mean(maps)), recall50, precision50, len(dets),
                           int(sum(t.xyxy.shape[0] for t in truths)))
