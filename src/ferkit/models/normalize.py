"""Input normalisation as part of the model, so every consumer feeds the same thing: pixels.

A trained ferkit model is ``NormalizedModel(net, mean, std)``: it takes (B, 1, 48, 48) faces as
floats in [0, 1] (uint8 / 255) and normalises them with the training set's statistics, which are
buffers and so travel in the state dict (``normalize.mean``, ``normalize.std``). The architecture
itself (``net``, what the zoo builds) still sees normalised faces. Nothing outside the model
knows the statistics: the trainer, Predictor, ensembles, distillation and ONNX export all pass
pixels.

An architecture that adapts its input itself (the ImageNet transfer entries, which apply
ImageNet's statistics after turning the grey face into RGB) says so with ``takes_pixels = True``;
`normalized` then gives it mean 0 / std 1, i.e. the pixels unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std with scalar statistics held as (persistent) buffers."""

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={float(self.mean):.4f}, std={float(self.std):.4f}"


class NormalizedModel(nn.Module):
    """[0, 1] pixels -> logits: `net` behind the Normalize holding its training statistics."""

    def __init__(self, net: nn.Module, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    @property
    def head_prefixes(self) -> tuple[str, ...]:
        """The net's head parameter prefixes (fine-tuning), as named inside this wrapper."""
        return tuple(f"net.{p}" for p in getattr(self.net, "head_prefixes", ()) or ())

    @property
    def stats(self) -> dict[str, float]:
        return {"mean": float(self.normalize.mean), "std": float(self.normalize.std)}


def takes_pixels(net: nn.Module) -> bool:
    """True for an architecture that normalises its own input (it gets mean 0 / std 1)."""
    return bool(getattr(net, "takes_pixels", False))


def normalized(net: nn.Module, mean: float, std: float) -> NormalizedModel:
    """`net` wrapped with the training statistics (or none, for a net that takes pixels)."""
    if takes_pixels(net):
        mean, std = 0.0, 1.0
    return NormalizedModel(net, mean, std)
