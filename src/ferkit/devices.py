"""Pick the torch device for --device auto|cpu|cuda|mps."""

from __future__ import annotations

import torch

from ferkit.errors import FerkitError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' takes CUDA, then Apple MPS, then the CPU; asking for a missing device is an error."""
    name = name.lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FerkitError("--device cuda: no CUDA GPU is visible to PyTorch on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise FerkitError("--device mps: Apple MPS is not available on this machine")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise FerkitError(f"--device {name}: expected auto, cpu, cuda, cuda:N or mps")
    return torch.device(name)
