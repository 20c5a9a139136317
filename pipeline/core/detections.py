"""Detections and their maths: IoU, class-aware NMS, small-box score damping, clipping,
merging tiled results."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Boxes = npt.NDArray[np.float32]  # (N, 4) x1, y1, x2, y2


@dataclass(frozen=True)
class Detections:
    """``xyxy`` (N, 4) float32 pixels, ``scores`` (N,) float32, ``class_ids`` (N,) int64."""

    xyxy: Boxes
    scores: npt.NDArray[np.float32]
    class_ids: npt.NDArray[np.int64]

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                          np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Detections:
        return Detections(self.xyxy[index], self.scores[index], self.class_ids[index])

    @staticmethod
    def concat(parts: list[Detections]) -> Detections:
        if not parts:
            return Detections.empty()
        return Detections(np.concatenate([p.xyxy for p in parts]).astype(np.float32),
                          np.concatenate([p.scores for p in parts]).astype(np.float32),
                          np.concatenate([p.class_ids for p in parts]).astype(np.int64))


def box_area(xyxy: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def _intersection(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]
                  ) -> npt.NDArray[np.float64]:
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    out: npt.NDArray[np.float64] = wh[..., 0] * wh[..., 1]
    return out


def box_iou(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Pairwise IoU ``(len(a), len(b))``; empty boxes have IoU 0 with everything."""
    inter = _intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_ioa_min(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]
                ) -> npt.NDArray[np.float64]:
    """Pairwise intersection over the smaller box's area: 1 when one box contains the other."""
    inter = _intersection(a, b)
    small = np.minimum(box_area(a)[:, None], box_area(b)[None, :])
    return np.divide(inter, small, out=np.zeros_like(inter), where=small > 0)


def nms(*, xyxy: npt.NDArray[np.floating], scores: npt.NDArray[np.floating],
        iou_threshold: float, class_ids: npt.NDArray[np.integer] | None = None,
        use_min_area: bool = False) -> npt.NDArray[np.intp]:
    """Indices kept by greedy NMS, best score first. Class-aware when ``class_ids`` is given.

    ``use_min_area`` compares by intersection over the smaller box, which removes the partial
    boxes that tile borders cut out of an object seen whole in a neighbouring tile.
    """
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    s = np.asarray(scores, np.float64).reshape(-1)
    if b.shape[0] == 0:
        return np.zeros(0, np.intp)
    if class_ids is not None:
        # Shift each class to its own region of the plane so boxes of different classes never
        # overlap (the span covers negative coordinates too); one pass then does all classes.
        offset = (np.asarray(class_ids, np.float64) * (b.max() - b.min() + 1.0))[:, None]
        b = b + offset
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    overlap = box_ioa_min if use_min_area else box_iou
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        ov = overlap(b[i:i + 1], b[rest])[0]
        order = rest[ov <= iou_threshold]
    return np.asarray(keep, np.intp)


def damp_small_boxes(det: Detections, *, px: float, power: float, score_threshold: float
                     ) -> Detections:
    """Scores of boxes whose short side is under ``px`` scaled by ``(short / px) ** power``,
    and those that fall under ``score_threshold`` dropped: a detector that is surer of small
    products than it is right about them (boxes in the pixels ``px`` is measured in)."""
    short = np.minimum(det.xyxy[:, 2] - det.xyxy[:, 0], det.xyxy[:, 3] - det.xyxy[:, 1])
    factor = np.clip(short / px, 0.0, 1.0) ** power
    scores = (det.scores * factor).astype(np.float32)
    keep = np.nonzero(scores >= score_threshold)[0]
    return Detections(det.xyxy[keep], scores[keep], det.class_ids[keep])


def clip_boxes(*, xyxy: npt.NDArray[np.floating], size_wh: tuple[int, int]) -> Boxes:
    w, h = size_wh
    b = np.asarray(xyxy, np.float32).reshape(-1, 4).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
    return b


def cxcywh_to_xyxy(cxcywh: npt.NDArray[np.floating]) -> Boxes:
    c = np.asarray(cxcywh, np.float32).reshape(-1, 4)
    half = c[:, 2:] / 2
    return np.concatenate([c[:, :2] - half, c[:, :2] + half], axis=1)
