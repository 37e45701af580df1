"""Class imbalance (FER2013 has 16x more happy than disgust faces) and the order of each epoch.

--balance weights: the loss weighs class c by w_c ~ (1 / n_c) ** power, scaled so the average
weight per training face is 1 (the loss keeps its usual scale).
--balance oversample: each epoch draws N faces with replacement, face i with probability ~ w_c(i),
so minority classes appear more often (and are augmented differently each time).
power = 1 balances fully; the default 0.5 (square root) moves half-way, without repeating every
disgust face 16 times an epoch.
"""

from __future__ import annotations

import numpy as np
import torch


def class_weights(counts: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Per-class weights (0 for absent classes); sum_c n_c w_c = N."""
    counts = np.asarray(counts, dtype=np.float64)
    w = np.zeros_like(counts)
    present = counts > 0
    w[present] = (1.0 / counts[present]) ** power
    return w * counts.sum() / max((w * counts).sum(), 1e-12)


class EpochSampler:
    """The face indices (on the device) of each training step; state lives in one torch.Generator.

    Drops the last partial batch when there is more than one batch (BatchNorm and a fixed step
    count for the LR schedule and torch.compile), so every step has exactly batch_size faces.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, balance: str, power: float,
                 seed: int, device: torch.device) -> None:
        self.n = len(labels)
        self.batch_size = min(batch_size, self.n)
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self.probs: torch.Tensor | None = None
        if balance == "oversample":
            counts = np.bincount(labels, minlength=int(labels.max()) + 1)
            per_face = class_weights(counts, power)[labels]
            self.probs = torch.as_tensor(per_face / per_face.sum(), dtype=torch.float64)

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.batch_size

    def epoch(self) -> torch.Tensor:
        """(steps_per_epoch, batch_size) int64 indices for one epoch, already on the device."""
        if self.probs is None:
            order = torch.randperm(self.n, generator=self.generator)
        else:
            order = torch.multinomial(self.probs, self.n, replacement=True,
                                      generator=self.generator)
        used = self.steps_per_epoch * self.batch_size
        return order[:used].view(self.steps_per_epoch, self.batch_size).to(self.device)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
