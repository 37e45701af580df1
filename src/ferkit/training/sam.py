"""Sharpness-aware minimization (SAM, Foret et al. 2021), `ferkit train --sam RHO`.

Each step takes the gradient at w + rho * g / ||g|| (the worst point of a small ball around
the weights, to first order) instead of at w, which steers training to flat minima; it helps
most on noisy labels, which FER2013 has. It costs a second forward/backward pass per step.
The base optimizer (SGD or AdamW) then steps with that gradient from the original weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class SharpnessAware:
    """Moves the weights to the ascent point and back; holds no state between steps."""

    def __init__(self, model: nn.Module, rho: float) -> None:
        if rho <= 0:
            raise ValueError(f"SAM: rho must be positive, not {rho}")
        self.model, self.rho = model, rho
        self._moved: list[tuple[torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def ascend(self) -> None:
        """w += rho * g / ||g||, from the gradients of the first backward pass (any loss
        scaling cancels in the ratio); parameters without a gradient stay put."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params]))
        scale = self.rho / (norm + 1e-12)
        if not torch.isfinite(scale):  # an fp16 overflow: the scaler skips this step anyway
            return
        for p in params:
            e = (p.grad.float() * scale).to(p.dtype)
            p.add_(e)
            self._moved.append((p, e))

    @torch.no_grad()
    def descend(self) -> None:
        """Back to the original weights, keeping the gradient taken at the ascent point."""
        for p, e in self._moved:
            p.sub_(e)
        self._moved.clear()


@contextmanager
def frozen_bn_statistics(model: nn.Module) -> Iterator[None]:
    """The second pass sees the same batch at perturbed weights: it must not count twice in
    the BatchNorm running statistics (momentum 0 leaves them unchanged)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.momentum is not None]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
