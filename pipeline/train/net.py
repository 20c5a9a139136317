"""Detector and embedder networks on the EfficientNet-Lite0 backbone.

``ProductNet`` is a class-agnostic dense product detector (CenterNet/FCOS family): a top-down
neck to stride 4, a centre heatmap and, at each cell, the distances to the box sides. The
exported graph returns ``scores [1, 1, H/4, W/4]`` (sigmoid) and ``boxes [1, 4, H/4, W/4]``
(x1, y1, x2, y2 in input pixels): the ``centernet`` format of the detector library.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from pipeline.train.backbone import BN_EPS, HEAD, TAPS, Lite0
from pipeline.train.data import STRIDE


def _conv(cin: int, cout: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _dws(c: int) -> nn.Sequential:
    return nn.Sequential(_conv(c, c, 3, c), _conv(c, c))


class ProductNet(nn.Module):
    def __init__(self, neck: int = 64, num_classes: int = 1):
        super().__init__()
        self.backbone = Lite0(15)
        self.levels = (15, 10, 4, 2)  # strides 32, 16, 8, 4: top-down
        self.lat = nn.ModuleList([_conv(TAPS[i], neck) for i in self.levels])
        self.smooth = nn.ModuleList([_dws(neck) for _ in self.levels[1:]])
        self.hm = nn.Sequential(_dws(neck), nn.Conv2d(neck, num_classes, 1))
        self.box = nn.Sequential(_dws(neck), nn.Conv2d(neck, 4, 1))
        last = self.hm[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.constant_(last.bias, -4.6)  # prior 0.01
        # Set when the weights come from an export (``warmstart.load_export``): its batch
        # norms are folded, and statistics of small batches would undo the folding.
        self.batch_norms_frozen = False

    def train(self, mode: bool = True) -> ProductNet:
        super().train(mode)
        if self.batch_norms_frozen:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (N, 3, H, W) in [0, 1] RGB -> heatmap logits and side distances (input px)."""
        feats = self.backbone(x)
        p = self.lat[0](feats[self.levels[0]])
        for lat, smooth, level in zip(self.lat[1:], self.smooth, self.levels[1:], strict=True):
            f = feats[level]
            p = smooth(lat(f) + F.interpolate(p, size=f.shape[-2:], mode="nearest"))
        dist = F.softplus(self.box(p)) * (STRIDE * 4)
        return self.hm(p), dist


class ExportWrapper(nn.Module):
    """Inference graph: float input NCHW RGB [0, 1] -> (scores, boxes xyxy)."""

    def __init__(self, net: ProductNet):
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


class Embedder(nn.Module):
    """Product crop -> unit-length embedding: Lite0 with its ImageNet head (1,280 channels
    at stride 32), average-pooled. Starting from the head ImageNet trained keeps its general
    features (which name real products better than anything 81 packshots can teach from
    scratch); training moves them so that views of one product land close together."""

    dim = HEAD

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Lite0(15)
        self.head = nn.Conv2d(TAPS[15], HEAD, 1, bias=False)
        self.bn = nn.BatchNorm2d(HEAD, eps=BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (N, 3, S, S) RGB in [0, 1] -> (N, 1280), L2-normalized."""
        f = F.relu6(self.bn(self.head(self.backbone(x)[15])))
        out: Tensor = F.normalize(f.mean((2, 3)), dim=1)
        return out
