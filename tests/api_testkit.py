"""A hand-written network (no timm, no torchvision) for the model-object API tests."""

from __future__ import annotations

import torch
from torch import nn

CUSTOM_RULES = """\
version: 1
stages: [3, 4]
rules:
  - name: my-dw
    match: {op: depthwise_conv, kernel: [3], index: "1:"}
    replace: {with: parc_dwconv, pe: first_in_container}
"""


class MyBlock(nn.Module):
    """1x1 conv, depthwise 3x3 (carries the stride), BN, ReLU; residual when shapes allow."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.dw = nn.Conv2d(out_chs, out_chs, 3, stride, 1, groups=out_chs, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU()
        self.residual = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(self.dw(self.pw(x))))
        return x + y if self.residual else y


class TinyNet(nn.Module):
    """Stem (stride 2), four stages of MyBlocks (strides 4..32), pooled linear head."""

    def __init__(self, num_classes: int = 10, widths=(16, 24, 32, 48), depths=(2, 2, 3, 2)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        )
        stages, chs = [], 8
        for width, depth in zip(widths, depths, strict=True):
            blocks = [MyBlock(chs, width, 2)] + [MyBlock(width, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            chs = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(chs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(x.mean((2, 3)))


class OtherNet(TinyNet):
    """The same layout under another class: load(model=...) must refuse it."""
