"""The weights' exponential moving average, with its decay warmed up over the first steps.

A plain EMA starts as a copy of the random initial weights and forgets them slowly: at decay
0.999, 200 steps (one FER2013 epoch at batch 128) leave 82% of them in the average, so a short
run's EMA model predicts one class. The decay used at update n is min(decay, (1 + n) / (10 + n))
(TensorFlow's `num_updates` rule): the average follows the model closely at first and settles
to `decay` (0.999 after about 9,000 updates, so the last epochs of a long run are unchanged).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def warmed_up_decay(decay: float, updates: int) -> float:
    """The decay of the update after `updates` earlier ones."""
    return min(decay, (1 + updates) / (10 + updates))


def weight_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An AveragedModel of `model`'s parameters and buffers (BN statistics) with the warmed-up
    decay; `update_parameters(model)` after each step, `.module` is the averaged model."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor],
               updates: torch.Tensor) -> None:
        d = warmed_up_decay(decay, int(updates))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked)
            for a, c in zip(averaged, current, strict=True):
                a.copy_(a * d + c * (1 - d))

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
