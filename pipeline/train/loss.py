"""Focal loss on centre heatmaps and GIoU on side distances."""

from __future__ import annotations

import torch
from torch import Tensor


def focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg = 1.0 - pos
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p**2 * (1 - target) ** 4 * neg
    n = pos.sum().clamp(min=1.0)
    return -(pos_loss.sum() + neg_loss.sum()) / n


def giou_loss(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """``pred``/``target`` (N, 4, H, W) side distances l, t, r, b; ``weight`` (N, H, W)."""
    mask = weight > 0
    if not bool(mask.any()):
        return pred.sum() * 0.0
    p = pred.permute(0, 2, 3, 1)[mask]
    t = target.permute(0, 2, 3, 1)[mask]
    w = weight[mask]
    pa = (p[:, 0] + p[:, 2]) * (p[:, 1] + p[:, 3])
    ta = (t[:, 0] + t[:, 2]) * (t[:, 1] + t[:, 3])
    iw = torch.minimum(p[:, 0], t[:, 0]) + torch.minimum(p[:, 2], t[:, 2])
    ih = torch.minimum(p[:, 1], t[:, 1]) + torch.minimum(p[:, 3], t[:, 3])
    inter = iw * ih
    union = pa + ta - inter + 1e-6
    iou = inter / union
    cw = torch.maximum(p[:, 0], t[:, 0]) + torch.maximum(p[:, 2], t[:, 2])
    ch = torch.maximum(p[:, 1], t[:, 1]) + torch.maximum(p[:, 3], t[:, 3])
    enclose = cw * ch + 1e-6
    giou = iou - (enclose - union) / enclose
    return ((1 - giou) * w).sum() / w.sum()
