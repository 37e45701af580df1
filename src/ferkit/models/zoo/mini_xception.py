"""mini-xception: the ~57k-parameter model of the `fer` package (Arriaga et al. 2017)."""

from __future__ import annotations

import torch
from torch import nn

from ferkit.models.layers import init_weights
from ferkit.models.registry import register_model


def separable_conv(c_in: int, c_out: int) -> nn.Sequential:
    """Keras SeparableConv2D(3x3, 'same', no bias): depthwise 3x3 then pointwise 1x1."""
    return nn.Sequential(nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False))


class XceptionModule(nn.Module):
    """Two separable convs with BN, a stride-2 3x3 max-pool, plus a strided 1x1-conv shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False),
                                      nn.BatchNorm2d(c_out))
        self.body = nn.Sequential(
            separable_conv(c_in, c_out), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            separable_conv(c_out, c_out), nn.BatchNorm2d(c_out),
            nn.MaxPool2d(3, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


@register_model("mini-xception",
                reported="65.9% (fer package, FER2013 PrivateTest; paper: 66% FER2013 test)")
def mini_xception(num_classes: int = 7) -> nn.Module:
    """mini-Xception (Arriaga et al. 2017), the fer package model: 4 separable residual modules."""
    return init_weights(nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),  # 'valid': 46
        nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),  # 44
        XceptionModule(8, 16),     # 22
        XceptionModule(16, 32),    # 11
        XceptionModule(32, 64),    # 6
        XceptionModule(64, 128),   # 3
        nn.Conv2d(128, num_classes, 3, padding=1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ))
