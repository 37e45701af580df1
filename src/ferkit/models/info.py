"""Model statistics for the zoo: parameter count, FLOPs per face, weight size, reported accuracy.

FLOPs are counted by torch.utils.flop_counter.FlopCounterMode, which counts one multiply-add as
2 FLOPs and counts only convolutions and matrix products (not BN, ReLU, pooling or additions).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ferkit.classes import NUM_CLASSES
from ferkit.errors import ModelError
from ferkit.models.registry import create_model, get_entry, list_models

INPUT_SIZE = (1, 1, 48, 48)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BN running statistics are buffers and are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_size: tuple[int, ...] = INPUT_SIZE) -> int:
    """FLOPs of one eval-mode forward pass (a multiply-add counts 2), as FlopCounterMode counts.

    The input is made on the model's device and dtype; a model on the meta device works too.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(input_size, device=device, dtype=dtype))
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the state dict's tensors (parameters and BN buffers): about the checkpoint size."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def model_info(name: str, num_classes: int = NUM_CLASSES, **kwargs: Any) -> dict[str, Any]:
    """Statistics of one registered model (built on the meta device, so nothing is allocated).

    An entry that cannot be built here (an optional package missing) gets None statistics and an
    `unavailable` message.
    """
    entry = get_entry(name)
    row: dict[str, Any] = {"name": entry.name, "params": None, "flops": None, "mflops": None,
                           "weights_mb": None, "reported": entry.reported,
                           "description": entry.description}
    try:
        model, flops = _build_cheaply(name, num_classes, **kwargs)
    except ModelError as exc:  # e.g. an optional package is missing: still list the entry
        row["unavailable"] = str(exc)
        return row
    row.update(params=count_parameters(model), flops=flops, mflops=round(flops / 1e6, 2),
               weights_mb=round(weight_bytes(model) / 1e6, 2))
    return row


def _build_cheaply(name: str, num_classes: int, **kwargs: Any) -> tuple[nn.Module, int]:
    """The model and its FLOPs, on the meta device (no memory, no init cost) where it can run."""
    try:
        with torch.device("meta"):
            model = create_model(name, num_classes=num_classes, **kwargs)
        return model, count_flops(model)
    except ModelError:
        raise
    except Exception:  # an architecture that cannot run on meta: build it for real
        model = create_model(name, num_classes=num_classes, **kwargs)
        return model, count_flops(model)


def model_table() -> list[dict[str, Any]]:
    """One dict per registered model, ferkit's own (ferkit-*) last, otherwise in registration order:
    name, params, flops (per 48x48 face),
    mflops, weights_mb (fp32 state dict, 1 MB = 10^6 bytes), reported, description (and
    `unavailable` for an entry that cannot be built in this install)."""
    entries = sorted(list_models(), key=lambda e: e.name.startswith("ferkit-"))  # stable sort
    return [model_info(entry.name) for entry in entries]
