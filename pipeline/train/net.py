"""A small anchor-free detector: depthwise-separable backbone, top-down neck, stride-4 heads.

Outputs a per-class centre heatmap and, at each cell, the distances to the box sides
(CenterNet/FCOS family). The exported graph returns ``scores [1, C, H/4, W/4]`` (sigmoid) and
``boxes [1, 4, H/4, W/4]`` (x1, y1, x2, y2 in input pixels).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

STRIDE = 4


def _conv(cin: int, cout: int, k: int, s: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _dws(cin: int, cout: int, s: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cin, k, s, groups=cin), _conv(cin, cout, 1, 1))


class ShelfNet(nn.Module):
    def __init__(self, num_classes: int, widths: tuple[int, int, int, int, int], neck: int):
        super().__init__()
        c0, c1, c2, c3, c4 = widths
        self.stem = _conv(3, c0, 3, 2)
        self.s4 = nn.Sequential(_dws(c0, c1, 2), _dws(c1, c1))
        self.s8 = nn.Sequential(_dws(c1, c2, 2), _dws(c2, c2))
        self.s16 = nn.Sequential(_dws(c2, c3, 2, 5), _dws(c3, c3, 1, 5), _dws(c3, c3, 1, 5))
        self.s32 = nn.Sequential(_dws(c3, c4, 2, 5), _dws(c4, c4, 1, 5))
        self.lat = nn.ModuleList([_conv(c, neck, 1, 1) for c in (c1, c2, c3, c4)])
        self.smooth = nn.ModuleList([_dws(neck, neck) for _ in range(3)])
        self.hm = nn.Sequential(_dws(neck, neck), nn.Conv2d(neck, num_classes, 1))
        self.box = nn.Sequential(_dws(neck, neck), nn.Conv2d(neck, 4, 1))
        last = self.hm[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.constant_(last.bias, -4.6)  # prior 0.01

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (N, 3, H, W) in [0, 1] RGB -> heatmap logits and side distances (input px)."""
        f4 = self.s4(self.stem(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p = self.lat[3](f32)
        for lat, sm, f in zip((self.lat[2], self.lat[1], self.lat[0]), self.smooth,
                              (f16, f8, f4), strict=True):
            p = sm(lat(f) + F.interpolate(p, size=f.shape[-2:], mode="nearest"))
        dist = F.softplus(self.box(p)) * (STRIDE * 4)
        return self.hm(p), dist


class ExportWrapper(nn.Module):
    """Inference graph: uint8-free float input NCHW RGB [0, 1] -> (scores, boxes xyxy)."""

    def __init__(self, net: ShelfNet):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, dist = self.net(x)
        h, w = logits.shape[-2:]
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) * STRIDE
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) * STRIDE
        gy = ys.view(1, 1, h, 1).expand(1, 1, h, w)
        gx = xs.view(1, 1, 1, w).expand(1, 1, h, w)
        boxes = torch.cat([gx - dist[:, 0:1], gy - dist[:, 1:2], gx + dist[:, 2:3],
                           gy + dist[:, 3:4]], dim=1)
        return torch.sigmoid(logits), boxes
