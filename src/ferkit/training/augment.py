"""Whole-batch augmentation on the device, with Kornia.

A batch arrives as uint8 (B, 1, 48, 48) straight from the device-resident dataset and leaves as
float32 pixels in [0, 1], what every model takes (the normalisation is inside the model, see
ferkit.models.normalize); there is no per-image Python. Erased patches are filled with the
training set's mean pixel value, so after the model's normalisation they are 0.
"""

from __future__ import annotations

from dataclasses import replace

import kornia.augmentation as K
import torch
from torch import nn

from ferkit.training.config import TrainConfig


class BatchAugment(nn.Module):
    """uint8 (B, 1, H, W) -> augmented (if training) float pixels (B, 1, H, W) in [0, 1].

    `fill`: the value of erased patches (the training set's mean pixel).
    """

    def __init__(self, config: TrainConfig, fill: float = 0.0) -> None:
        super().__init__()
        self.pixel = nn.Sequential(*_pixel_ops(config))
        self.erase = nn.Sequential(*_erase_ops(config, float(fill)))

    @property
    def active(self) -> bool:
        return len(self.pixel) + len(self.erase) > 0

    @torch.no_grad()
    def forward(self, x: torch.Tensor, train: bool = True) -> torch.Tensor:
        x = x.float().div_(255.0)
        if train and len(self.pixel):
            x = self.pixel(x)
        if train and len(self.erase):
            x = self.erase(x)
        return x


def without_flip(c: TrainConfig) -> TrainConfig:
    """The config's augmentation but its flip (for views whose flip is drawn later)."""
    return replace(c, aug_flip=0.0)


def flip_only(c: TrainConfig) -> TrainConfig:
    """The config's flip and no other augmentation (for faces augmented beforehand)."""
    return replace(c, aug_rotate=0.0, aug_shift=0.0, aug_scale=0.0, aug_jitter=0.0,
                   aug_erase=0.0)


def _pixel_ops(c: TrainConfig) -> list[nn.Module]:
    ops: list[nn.Module] = []
    if c.aug_rotate or c.aug_shift or c.aug_scale:
        ops.append(K.RandomAffine(
            degrees=c.aug_rotate,
            translate=(c.aug_shift, c.aug_shift) if c.aug_shift else None,
            scale=(1 - c.aug_scale, 1 + c.aug_scale) if c.aug_scale else None,
            padding_mode="reflection", p=1.0))
    if c.aug_flip:
        ops.append(K.RandomHorizontalFlip(p=c.aug_flip))
    if c.aug_jitter:
        j = c.aug_jitter
        ops.append(K.RandomBrightness((1 - j, 1 + j), p=0.5))
        ops.append(K.RandomContrast((1 - j, 1 + j), p=0.5))
    return ops


def _erase_ops(c: TrainConfig, fill: float) -> list[nn.Module]:
    if not c.aug_erase:
        return []
    return [K.RandomErasing(scale=(0.02, 0.15), ratio=(0.3, 3.3), value=fill, p=c.aug_erase)]
