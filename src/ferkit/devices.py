"""Pick the torch device for --device auto|cpu|cuda|mps."""

from __future__ import annotations

import os

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


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask / cgroup cpuset), else os.cpu_count()."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
