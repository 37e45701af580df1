"""Time one training step of a model in a given precision: what `--amp auto` compares on the CPU.

The step is the trainer's (forward under autocast, cross-entropy, backward, SGD with momentum) on
a copy of the model, so the run's own weights, BN statistics and random streams are untouched,
and on a real batch of its faces, so the timing is of the workload the run will execute.
"""

from __future__ import annotations

import copy
import hashlib
import time

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.models.normalize import NormalizedModel
from ferkit.precision import Precision, StepTimer


def step_timer(model: nn.Module, faces: torch.Tensor) -> StepTimer:
    """A function Precision -> images/s of one training step of a copy of `model` on `faces`
    (float pixels (B, 1, H, W) in [0, 1], one per-process batch)."""
    probe = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(probe.parameters(), lr=1e-4, momentum=0.9)
    labels = torch.zeros(len(faces), dtype=torch.long, device=faces.device)

    def images_per_s(precision: Precision) -> float:
        fmt = torch.channels_last if precision.channels_last else torch.contiguous_format
        probe.to(memory_format=fmt)
        x = faces.contiguous(memory_format=fmt)
        with torch.random.fork_rng(devices=[]):  # dropout in the probe: not the run's stream
            start = time.perf_counter()
            with precision.autocast(faces.device):
                logits = probe(x)
            loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seconds = time.perf_counter() - start
        return len(faces) / seconds

    return images_per_s


def workload_key(model: nn.Module, batch: int) -> str:
    """What makes two runs' step timings interchangeable on one machine: the architecture (its
    printed layers) and the per-process batch. The training statistics a NormalizedModel holds
    are left out: they change with the data (a --holdout run, another dataset), not the cost."""
    net = model.net if isinstance(model, NormalizedModel) else model
    return f"{hashlib.sha256(repr(net).encode()).hexdigest()[:16]} batch {batch}"
