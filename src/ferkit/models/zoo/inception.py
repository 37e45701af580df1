"""inception: a small GoogLeNet-style network of Inception modules for 48x48 faces."""

from __future__ import annotations

import torch
from torch import nn

from ferkit.models.layers import conv_bn_relu, init_weights
from ferkit.models.registry import register_model


class Inception(nn.Module):
    """Parallel 1x1, 1x1-3x3, 1x1-3x3-3x3 (a cheap 5x5) and pool-1x1 branches, concatenated."""

    def __init__(self, c_in: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.b1 = nn.Sequential(*conv_bn_relu(c_in, c1, 1))
        self.b3 = nn.Sequential(*conv_bn_relu(c_in, c3r, 1), *conv_bn_relu(c3r, c3))
        self.b5 = nn.Sequential(*conv_bn_relu(c_in, c5r, 1), *conv_bn_relu(c5r, c5),
                                *conv_bn_relu(c5, c5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *conv_bn_relu(c_in, cp, 1))
        self.out_channels = c1 + c3 + c5 + cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


@register_model("inception")
def inception(num_classes: int = 7, dropout: float = 0.4) -> nn.Module:
    """Small Inception net: 5 modules of 1x1 / 3x3 / double-3x3 / pool branches, GAP head."""
    m3a = Inception(64, 32, 48, 64, 16, 32, 32)           # 24x24 -> 160
    m3b = Inception(160, 64, 64, 96, 16, 48, 32)          # 24x24 -> 240
    m4a = Inception(240, 96, 64, 128, 24, 48, 48)         # 12x12 -> 320
    m4b = Inception(320, 112, 80, 160, 32, 64, 64)        # 12x12 -> 400
    m5a = Inception(400, 128, 96, 192, 32, 64, 64)        # 6x6 -> 448
    return init_weights(nn.Sequential(
        *conv_bn_relu(1, 32), *conv_bn_relu(32, 64), nn.MaxPool2d(2),
        m3a, m3b, nn.MaxPool2d(2),
        m4a, m4b, nn.MaxPool2d(2),
        m5a,
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
        nn.Linear(m5a.out_channels, num_classes),
    ))
