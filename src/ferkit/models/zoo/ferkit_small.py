"""ferkit-small: ferkit's bundled default model, a compact VGG-style net fast on CPU.

Design, measured with bench/zoo_speed.py on a 2-core AVX2 machine (PyTorch CPU, batch 256):
- the stem is lossless space-to-depth (48x48x1 -> 24x24x4, like a 6x6 stride-2 conv) then a
  3x3 conv and a max-pool, as ResNet's stem, so no conv runs at 48x48, where memory traffic
  (not FLOPs) dominates on CPU;
- plain 3x3 conv-BN-ReLU pairs at 12x12, 6x6 and 3x3, global average pooling, one linear layer;
  no depthwise-separable convs: on PyTorch CPU they are slower per useful FLOP (mini-xception, at
  a third of the FLOPs, runs at a third of the speed);
- weights kept in channels_last, which oneDNN runs ~1.4x faster than NCHW on CPU (the 1-channel
  input needs no conversion; the state dict is the same).

Two variants, kept as options so the README's holdout comparison can be repeated; neither beat
the default beyond seed noise at width 32 over 60 epochs (results/arch-holdout-cpu.json): a
flattened head that keeps where on the face each feature fired, and a second 3x3 conv at 24x24.
"""

from __future__ import annotations

import torch
from torch import nn

from ferkit.models.layers import conv_bn_relu, init_weights
from ferkit.models.registry import register_model

HEADS = ("gap", "flatten")


class FerkitSmall(nn.Module):
    """head: "gap" averages the last 3x3 map; "flatten" keeps the 9 cells (9x the head's
    weights, no measurable cost in speed). stem_convs: 3x3 convs at 24x24 (each one adds
    about 15% to a training step)."""

    def __init__(self, num_classes: int = 7, width: int = 24, dropout: float = 0.3,
                 head: str = "gap", stem_convs: int = 1) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"ferkit-small: head must be one of {HEADS}, not {head!r}")
        if stem_convs < 1:
            raise ValueError(f"ferkit-small: stem_convs must be at least 1, not {stem_convs}")
        w = width
        stem = conv_bn_relu(4, w)
        for _ in range(stem_convs - 1):
            stem += conv_bn_relu(w, w)
        self.features = nn.Sequential(
            nn.PixelUnshuffle(2),                                    # 4 x 24 x 24
            *stem, nn.MaxPool2d(2),                                  # w x 12 x 12
            *conv_bn_relu(w, 2 * w), *conv_bn_relu(2 * w, 2 * w), nn.MaxPool2d(2),  # 6 x 6
            *conv_bn_relu(2 * w, 4 * w), *conv_bn_relu(4 * w, 4 * w), nn.MaxPool2d(2),  # 3 x 3
            *conv_bn_relu(4 * w, 8 * w), *conv_bn_relu(8 * w, 8 * w),
        )
        pool, features = ((nn.AdaptiveAvgPool2d(1), 8 * w) if head == "gap"
                          else (nn.Identity(), 8 * w * 3 * 3))
        self.head = nn.Sequential(pool, nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(features, num_classes))
        init_weights(self)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("ferkit-small")
def ferkit_small(num_classes: int = 7, width: int = 24, dropout: float = 0.3, head: str = "gap",
                 stem_convs: int = 1) -> nn.Module:
    """Compact CPU-fast VGG (space-to-depth stem, 3x3 conv pairs 48-96-192 at width 24, GAP)."""
    return FerkitSmall(num_classes, width, dropout, head, stem_convs)
