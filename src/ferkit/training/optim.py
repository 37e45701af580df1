"""Optimizer (SGD Nesterov or AdamW, no weight decay on BN/bias) and the per-step LR schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from ferkit.training.config import TrainConfig


def param_groups(model: nn.Module, c: TrainConfig) -> list[dict]:
    """Weight decay on conv/linear weights only: 1-d tensors (BN scale/shift, biases) are exempt.

    For transfer learning (freeze_epochs or backbone_lr_scale set) the backbone and the head get
    their own groups (ferkit.training.finetune), the backbone at lr * backbone_lr_scale.
    """
    if c.freeze_epochs or c.backbone_lr_scale != 1.0:
        from ferkit.training import finetune

        parts = [(name, g["params"], g["lr"]) for g in
                 finetune.param_groups(model, c.lr, c.weight_decay, c.backbone_lr_scale)
                 for name in [g["name"]]]
    else:
        parts = [("all", list(model.parameters()), c.lr)]
    groups = []
    for name, params, lr in parts:
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups += [{"params": decay, "lr": lr, "weight_decay": c.weight_decay, "name": name},
                   {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}-no-wd"}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, c: TrainConfig, device: torch.device
                    ) -> torch.optim.Optimizer:
    groups = param_groups(model, c)
    fused = {"fused": True} if device.type == "cuda" else {}
    if c.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.momentum > 0,
                               **fused)
    return torch.optim.AdamW(groups, lr=c.lr, betas=(0.9, 0.999), **fused)


def _onecycle_pct(warmup: float, total_steps: int) -> float:
    """OneCycleLR's warm-up fraction, nudged off the value where its warm-up phase ends at step
    0 (pct * total == 1, e.g. 4 steps at 0.25): PyTorch then divides by zero on the first step."""
    pct = max(warmup, 1e-3)
    return pct + 0.5 / total_steps if abs(pct * total_steps - 1.0) < 1e-9 else pct


def build_scheduler(optimizer: torch.optim.Optimizer, c: TrainConfig, total_steps: int):
    """One-cycle (warm up to each group's lr, cosine down to lr/1e4; SGD momentum cycled
    inversely), or linear warmup then cosine to zero. Both are stepped once per batch."""
    total_steps = max(total_steps, 1)
    if c.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps,
            pct_start=_onecycle_pct(c.warmup, total_steps), anneal_strategy="cos", div_factor=25.0,
            final_div_factor=1e4, cycle_momentum=c.optimizer == "sgd" and c.momentum > 0,
            base_momentum=min(0.85, c.momentum), max_momentum=c.momentum)
    warmup = int(round(c.warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
