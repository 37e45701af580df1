"""Batch mixing (--mix): MixUp (Zhang et al., 2018) and CutMix (Yun et al., 2019).

A mixed batch pairs each face i with face perm[i] of the same batch: MixUp blends the two images
as lam * x_i + (1 - lam) * x_perm[i]; CutMix pastes a box of x_perm[i] into x_i, with lam the
share of x_i left. The loss is the same blend of the two labels' losses, and a teacher's soft
targets are blended the same way (live teachers simply label the mixed image). One lam and one
box per batch, as in both papers' reference code. The random numbers come from torch's global
generator, which the trainer seeds and checkpoints, so a resumed run mixes as the first would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ferkit.training.config import MIX_MODES


@dataclass(frozen=True)
class Mix:
    """How one batch was mixed: image i holds a share `lam` of itself, 1 - lam of perm[i]."""

    perm: torch.Tensor
    lam: float

    def loss(self, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.lam * criterion(logits, labels) + (1 - self.lam) * criterion(
            logits, labels[self.perm])

    def log_probs(self, log_p: torch.Tensor) -> torch.Tensor:
        """The mixed images' target log-probabilities: log(lam p_i + (1 - lam) p_perm[i])."""
        lam = torch.tensor([self.lam, 1 - self.lam], device=log_p.device).log()
        return torch.logaddexp(log_p + lam[0], log_p[self.perm] + lam[1])


class BatchMix:
    """mode: none | mixup | cutmix; alpha: lam ~ Beta(alpha, alpha); prob: the share of
    batches mixed (the others pass through untouched)."""

    def __init__(self, mode: str, alpha: float = 1.0, prob: float = 1.0) -> None:
        if mode not in MIX_MODES:
            raise ValueError(f"mix mode {mode!r} is not one of {MIX_MODES}")
        self.mode, self.alpha, self.prob = mode, alpha, prob
        self._beta = torch.distributions.Beta(alpha, alpha) if mode != "none" else None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, Mix | None]:
        """(B, C, H, W) -> (the mixed batch, how it was mixed), or (x, None) when unmixed."""
        if self._beta is None or len(x) < 2 or torch.rand(()).item() >= self.prob:
            return x, None
        lam = float(self._beta.sample())
        perm = torch.randperm(len(x), device=x.device)
        if self.mode == "mixup":
            return x * lam + x[perm] * (1 - lam), Mix(perm, lam)
        top, bottom, left, right = cut_box(x.shape[-2], x.shape[-1], lam)
        mixed = x.clone()
        mixed[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
        area = (bottom - top) * (right - left)
        return mixed, Mix(perm, 1 - area / (x.shape[-2] * x.shape[-1]))


def cut_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """CutMix's box: sides sqrt(1 - lam) of the image's, centred at a uniform random pixel,
    clipped to the image (so the share actually cut is recomputed from the box)."""
    cut = math.sqrt(1 - lam)
    h, w = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(0, height, ())), int(torch.randint(0, width, ()))
    return (max(cy - h // 2, 0), min(cy + h // 2, height), max(cx - w // 2, 0),
            min(cx + w // 2, width))
