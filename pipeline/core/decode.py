"""Raw detector outputs -> candidate detections in model-input pixels (before NMS).

Five layouts:
- ``centernet`` (our models): ``scores [1, C, h, w]`` per-class probabilities on a grid and
  ``boxes [1, 4, h, w]`` x1 y1 x2 y2; one candidate per local maximum of the best class score,
  its score optionally weighed by how well the neighbouring cells agree on its box.
- ``yolov8`` (Ultralytics YOLOv8/YOLO11 export, no NMS in graph): ``[1, 4 + C, N]`` with
  cx, cy, w, h in input pixels (or normalised to [0, 1], as TFLite-style exports give them)
  and per-class scores; ``[1, N, 4 + C]`` is accepted too.
- ``rtdetr`` (RT-DETR style): ``[1, Q, 4 + C]`` with cx, cy, w, h normalised to [0, 1] (or in
  pixels when ``normalized`` is false) and per-class scores.
- ``yolov5`` (YOLOv5 export): ``[1, N, 5 + C]`` with cx, cy, w, h, an objectness and
  per-class scores; a candidate's score is objectness x class score.
- ``end2end`` (NMS inside the graph: YOLOv10, YOLO26, Ultralytics ``nms=True`` exports):
  ``[1, N, 6]`` rows of x1, y1, x2, y2 (input pixels, or normalised), score and class id,
  the best first, unused rows zero.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.core.detections import Detections, cxcywh_to_xyxy
from pipeline.errors import DecodeError

Format = Literal["centernet", "yolov8", "yolov5", "rtdetr", "end2end"]
Array = npt.NDArray[np.float32]


def _top(scores: Array, limit: int) -> npt.NDArray[np.intp]:
    if scores.shape[0] <= limit:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, limit)[:limit]
    return part[np.argsort(-scores[part], kind="stable")]


def _pair_iou(a: Array, b: Array) -> Array:
    """IoU of boxes ``a[:, i]`` and ``b[:, i]`` (``(4, n)`` x1 y1 x2 y2 each)."""
    iw = np.clip(np.minimum(a[2], b[2]) - np.maximum(a[0], b[0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[3]) - np.maximum(a[1], b[1]), 0, None)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return np.asarray(inter / np.maximum(union, 1e-9), np.float32)


def box_agreement(best: Array, boxes: Array, ys: npt.NDArray[np.intp],
                  xs: npt.NDArray[np.intp]) -> Array:
    """How well the cells around each peak ``(ys, xs)`` agree on its box: the mean IoU of the
    peak's box with each of its eight neighbours' boxes, weighted by their scores ``best``
    (``(h, w)``; ``boxes`` ``(4, h, w)``). A product's cells all regress the same sides; where
    the network is unsure where a product ends (two packs merged, half a bottle) they
    disagree. 1 where no neighbour has a score."""
    h, w = best.shape
    total = np.zeros(len(ys), np.float32)
    weight = np.zeros(len(ys), np.float32)
    peak = boxes[:, ys, xs]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ny, nx = ys + dy, xs + dx
            inside = ((dy, dx) != (0, 0)) & (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            ny, nx = np.clip(ny, 0, h - 1), np.clip(nx, 0, w - 1)
            wt = np.where(inside, best[ny, nx], 0.0).astype(np.float32)
            total += wt * _pair_iou(peak, boxes[:, ny, nx])
            weight += wt
    return np.asarray(np.where(weight > 0, total / np.maximum(weight, 1e-9), 1.0), np.float32)


def decode_centernet(*, scores: Array, boxes: Array, score_threshold: float,
                     max_candidates: int = 1000, agreement: float = 0.0) -> Detections:
    """One candidate per local maximum of the best class score; with ``agreement`` > 0 its
    score is multiplied by :func:`box_agreement` to that power (a box its neighbourhood does
    not agree on ranks lower) before the threshold."""
    if scores.ndim != 4 or boxes.ndim != 4 or boxes.shape[1] != 4:
        raise DecodeError(f"centernet wants scores [1,C,h,w] and boxes [1,4,h,w], got "
                          f"{scores.shape} and {boxes.shape}")
    s = scores[0]
    best = s.max(axis=0).astype(np.float32)
    cls = s.argmax(axis=0)
    peak = best >= cv2.dilate(best, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(peak & (best >= score_threshold))
    conf = best[ys, xs]
    if agreement > 0:  # agreement <= 1: a peak under the threshold stays under it
        conf = conf * box_agreement(best, boxes[0], ys, xs) ** agreement
        kept = conf >= score_threshold
        ys, xs, conf = ys[kept], xs[kept], conf[kept]
    order = _top(conf, max_candidates)
    ys, xs = ys[order], xs[order]
    xyxy = boxes[0][:, ys, xs].T.astype(np.float32)
    return Detections(xyxy, conf[order].astype(np.float32), cls[ys, xs].astype(np.int64))


def _candidates(cxcywh: Array, cls_scores: Array, score_threshold: float,
                max_candidates: int) -> Detections:
    cls = cls_scores.argmax(axis=1)
    conf = cls_scores[np.arange(cls_scores.shape[0]), cls]
    # A box or score that is not a number (a model exported wrong, fp16 overflow) is no
    # product: NaN would pass no comparison and poison every overlap it enters.
    keep = np.nonzero((conf >= score_threshold) & np.isfinite(cxcywh).all(axis=1))[0]
    keep = keep[_top(conf[keep], max_candidates)]
    return Detections(cxcywh_to_xyxy(cxcywh[keep]), conf[keep].astype(np.float32),
                      cls[keep].astype(np.int64))


def _in_pixels(box: Array, input_wh: tuple[int, int] | None, normalized: bool) -> Array:
    """Four box columns (x, y, x, y or cx, cy, w, h) in input pixels, from [0, 1] of the
    input's size when ``normalized``."""
    if not normalized:
        return box
    if input_wh is None:
        raise ValueError("normalized boxes need the input size")
    w, h = input_wh
    return (box * np.array([w, h, w, h], np.float32)).astype(np.float32)


def decode_yolov8(*, output: Array, num_classes: int, score_threshold: float,
                  input_wh: tuple[int, int] | None = None, normalized: bool = False,
                  max_candidates: int = 3000) -> Detections:
    if output.ndim != 3 or output.shape[0] != 1:
        raise DecodeError(f"yolov8 wants [1, 4+C, N], got {output.shape}")
    o = output[0]
    if o.shape[0] == 4 + num_classes:
        o = o.T
    elif o.shape[1] != 4 + num_classes:
        raise DecodeError(f"yolov8 output {output.shape} does not fit {num_classes} classes")
    box = _in_pixels(o[:, :4].astype(np.float32), input_wh, normalized)
    return _candidates(box, o[:, 4:].astype(np.float32), score_threshold, max_candidates)


def decode_yolov5(*, output: Array, num_classes: int, score_threshold: float,
                  input_wh: tuple[int, int] | None = None, normalized: bool = False,
                  max_candidates: int = 3000) -> Detections:
    if output.ndim != 3 or output.shape[0] != 1 or output.shape[2] != 5 + num_classes:
        raise DecodeError(f"yolov5 wants [1, N, 5+{num_classes}], got {output.shape}")
    o = output[0].astype(np.float32)
    box = _in_pixels(o[:, :4], input_wh, normalized)
    return _candidates(box, o[:, 4:5] * o[:, 5:], score_threshold, max_candidates)


def decode_rtdetr(*, output: Array, num_classes: int, score_threshold: float,
                  input_wh: tuple[int, int], normalized: bool = True) -> Detections:
    if output.ndim != 3 or output.shape[0] != 1 or output.shape[2] != 4 + num_classes:
        raise DecodeError(f"rtdetr wants [1, Q, 4+{num_classes}], got {output.shape}")
    o = output[0].astype(np.float32)
    return _candidates(_in_pixels(o[:, :4], input_wh, normalized), o[:, 4:], score_threshold,
                       o.shape[0])


def decode_end2end(*, output: Array, num_classes: int, score_threshold: float,
                   input_wh: tuple[int, int], normalized: bool = False) -> Detections:
    """Rows already through the graph's own NMS; padding rows (no area) and class ids the
    labels do not name are dropped."""
    if output.ndim != 3 or output.shape[0] != 1 or output.shape[2] != 6:
        raise DecodeError(f"end2end wants [1, N, 6] (x1 y1 x2 y2 score class), got "
                          f"{output.shape}")
    o = output[0].astype(np.float32)
    xyxy = _in_pixels(o[:, :4], input_wh, normalized)
    cls = np.rint(o[:, 5])
    keep = ((o[:, 4] >= score_threshold) & (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
            & (cls >= 0) & (cls < num_classes) & np.isfinite(o).all(axis=1))
    keep = np.nonzero(keep)[0]
    keep = keep[_top(o[keep, 4], keep.shape[0])]
    return Detections(xyxy[keep], o[keep, 4].copy(), cls[keep].astype(np.int64))


_ROW_DECODERS = {"yolov8": decode_yolov8, "yolov5": decode_yolov5, "rtdetr": decode_rtdetr,
                 "end2end": decode_end2end}


def decode_rows(fmt: Format, *, output: Array, num_classes: int, score_threshold: float,
                input_wh: tuple[int, int], normalized: bool | None) -> Detections:
    """A single-output layout (every format but ``centernet``); ``normalized`` None: the
    format's convention (``rtdetr`` normalized, the others pixels)."""
    if fmt == "centernet":
        raise ValueError("centernet has two outputs: use decode_centernet")
    return _ROW_DECODERS[fmt](
        output=output, num_classes=num_classes, score_threshold=score_threshold,
        input_wh=input_wh, normalized=(fmt == "rtdetr") if normalized is None else normalized)
