"""resnet: ResNet-18-style residual network adapted to 48x48 faces (3x3 stem, no stem max-pool)."""

from __future__ import annotations

import torch
from torch import nn

from ferkit.models.layers import conv_bn_relu, init_weights
from ferkit.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1-conv projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn_relu(c_in, c_out, stride=stride),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, num_classes: int = 7, blocks: tuple[int, ...] = (2, 2, 2, 2),
                 widths: tuple[int, ...] = (64, 128, 256, 512), dropout: float = 0.0,
                 zero_init_residual: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_relu(1, widths[0]))  # 48x48, no max-pool
        stages, c_in = [], widths[0]
        for i, (n, c_out) in enumerate(zip(blocks, widths, strict=True)):
            for j in range(n):
                stages.append(BasicBlock(c_in, c_out, stride=2 if i > 0 and j == 0 else 1))
                c_in = c_out
        self.stages = nn.Sequential(*stages)  # 48 -> 24 -> 12 -> 6
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(c_in, num_classes))
        init_weights(self)
        if zero_init_residual:  # each block starts as the identity: steadier early training
            for block in stages:
                nn.init.zeros_(block.body[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@register_model("resnet", reported="63.6% (source project, FER2013 test)")
def resnet(num_classes: int = 7, **kwargs) -> nn.Module:
    """ResNet-18-style basic blocks (64-128-256-512), 3x3 stem without max-pool, global avg pool."""
    return ResNet(num_classes, **kwargs)
