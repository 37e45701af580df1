"""Fine-tuning schedule for transfer learning: a frozen backbone first, then everything.

For the first `freeze_epochs` epochs only the head (the new classifier) trains; from then on all
layers train, the backbone at `lr * backbone_lr_scale`. The trainer calls three functions:

    param_groups(model, lr, weight_decay, backbone_lr_scale)  # the optimizer's groups
    train_mode(model, epoch_from_0, freeze_epochs)             # instead of model.train()
    checkpoint_arch_kwargs(config.model_kwargs)                # a checkpoint's arch_kwargs

The head is named by the model's `head_prefixes` attribute (parameter-name prefixes, set by the
transfer zoo entries); other models fall back to their last nn.Linear layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

# arch kwargs that only say where initial weights come from: never stored in a checkpoint, whose
# own state_dict replaces those weights (and rebuilding must not need the weights package/file).
WEIGHT_SOURCE_KWARGS = ("pretrained", "weights")


def checkpoint_arch_kwargs(kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Model kwargs to store as a checkpoint's arch_kwargs (without pretrained/weights)."""
    return {k: v for k, v in (kwargs or {}).items() if k not in WEIGHT_SOURCE_KWARGS}


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of the head: the model's own, else its last nn.Linear."""
    own = tuple(getattr(model, "head_prefixes", ()) or ())
    if own:
        return own
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ValueError(f"{type(model).__name__}: no head_prefixes attribute and no nn.Linear "
                         "layer, so the backbone/head split is unknown")
    return (f"{last}.",)


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone, head) parameters."""
    prefixes = head_prefixes(model)
    backbone, head = [], []
    for name, param in model.named_parameters():
        (head if name.startswith(prefixes) else backbone).append(param)
    if not head:
        raise ValueError(f"{type(model).__name__}: no parameter starts with {prefixes}")
    return backbone, head


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """requires_grad on every backbone parameter (the head always trains)."""
    backbone, head = split_parameters(model)
    for p in backbone:
        p.requires_grad_(trainable)
    for p in head:
        p.requires_grad_(True)


def is_frozen(epoch: int, freeze_epochs: int) -> bool:
    """Epochs count from 0 here: epochs 0..freeze_epochs-1 train the head only."""
    return epoch < freeze_epochs


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0,
                 backbone_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Two optimizer groups: "head" at `lr`, then "backbone" at `lr * backbone_lr_scale`.

    Every parameter is included, frozen or not: a frozen one has no gradient, so the optimizer
    skips it until it is unfrozen, and the groups never change, so schedulers keep working across
    the unfreeze (one-cycle needs max_lr=[g["lr"] for g in optimizer.param_groups]). The head
    comes first, so optimizer.param_groups[0]["lr"] is the head's lr. ferkit.training.optim
    splits each group again into decayed weights and undecayed BN/bias tensors.
    """
    backbone, head = split_parameters(model)
    groups = [{"params": head, "lr": lr, "weight_decay": weight_decay, "name": "head"}]
    if backbone:
        groups.append({"params": backbone, "lr": lr * backbone_lr_scale,
                       "weight_decay": weight_decay, "name": "backbone"})
    return groups


def _backbone_norm_layers(model: nn.Module) -> Iterable[nn.Module]:
    prefixes = head_prefixes(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not \
                f"{name}.".startswith(prefixes):
            yield module


def train_mode(model: nn.Module, epoch: int, freeze_epochs: int) -> bool:
    """model.train() for `epoch` (0-based), freezing or unfreezing the backbone per the schedule.

    While frozen, backbone batch-norm layers stay in eval mode so their ImageNet running
    statistics are kept. Returns True when the backbone is frozen this epoch.
    """
    model.train()
    if freeze_epochs <= 0:
        return False
    frozen = is_frozen(epoch, freeze_epochs)
    set_backbone_trainable(model, not frozen)
    if frozen:
        for module in _backbone_norm_layers(model):
            module.eval()
    return frozen


def trainable_fraction(model: nn.Module) -> float:
    """Share of parameters with requires_grad (for logs and tests)."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / max(total, 1)
