"""The `ensemble` architecture: several trained models' probabilities averaged.

A registry entry like any other (not trainable, so `ferkit train` and `ferkit models` leave it
out), so a checkpoint of it loads through `build_model` with no special case. Its arguments are
the members' descriptions, ``[{"arch", "arch_kwargs", "normalization"}, ...]`` (the
normalisation is a record only: each member is a NormalizedModel whose statistics are in the
state dict), and their weights. ferkit.models.ensemble builds such checkpoints from others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ferkit.classes import NUM_CLASSES
from ferkit.errors import ModelError
from ferkit.models.normalize import NormalizedModel
from ferkit.models.registry import create_model, register_model

ARCH = "ensemble"
_TINY = 1e-30  # floor for log(prob): keeps log finite where every member gives a class 0


class Ensemble(nn.Module):
    """Weighted mean of the members' softmax probabilities, returned as log-probabilities.

    Input: (B, 1, 48, 48) faces in [0, 1], passed to every member (each normalises them with its
    own statistics). The output is ``log(sum_i w_i * softmax(member_i(x)))`` with the weights
    summing to 1, so a softmax of it (what inference does with any model's output) gives back the
    averaged probabilities.
    """

    takes_pixels = True  # the members normalise

    def __init__(self, members: Sequence[dict[str, Any]], weights: Sequence[float] | None = None,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        if not members:
            raise ModelError("an ensemble needs at least one member")
        self.specs = [dict(m) for m in members]
        self.weights = normalise_weights(weights, len(members))
        modules = []
        for i, spec in enumerate(self.specs):
            try:
                kwargs = dict(spec.get("arch_kwargs") or {})
                modules.append(NormalizedModel(create_model(spec["arch"], num_classes, **kwargs)))
            except (KeyError, TypeError) as exc:
                raise ModelError(f"ensemble member {i}: malformed description ({exc!r})") from exc
        self.members = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = None
        for member, w in zip(self.members, self.weights, strict=True):
            p = member(x).float().softmax(dim=1) * w
            probs = p if probs is None else probs + p
        return probs.clamp_min(_TINY).log()


def normalise_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Member weights scaled to sum to 1 (equal if None); wrong length or sign is a ModelError."""
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ModelError(f"{len(weights)} ensemble weights given for {n} models")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ModelError(f"ensemble weights must be non-negative with a positive sum, got "
                         f"{','.join(f'{w:g}' for w in weights)}")
    total = sum(weights)
    return [w / total for w in weights]


@register_model(ARCH, trainable=False)
def ensemble(num_classes: int = NUM_CLASSES, members: Sequence[dict[str, Any]] = (),
             weights: Sequence[float] | None = None) -> nn.Module:
    """Weighted mean of trained models' probabilities (built by `ferkit ensemble`)."""
    return Ensemble(members, weights, num_classes=num_classes)
