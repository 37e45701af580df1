"""configurable-cnn: the source project's experiment-grid CNN (conv stages x FC layers x widths).

Every size is a keyword argument, so a sweep trial's parameters build the model directly and the
same kwargs, stored in the checkpoint as `arch_kwargs`, rebuild it for inference.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ferkit.errors import ModelError
from ferkit.models.layers import conv_bn_relu, init_weights
from ferkit.models.registry import register_model

MAX_STAGES = 5  # 48 -> 24 -> 12 -> 6 -> 3 -> 1 after five 2x2 max-pools


def stage_filters(stages: int, filters: int | Sequence[int], max_filters: int = 512) -> list[int]:
    """Filters per conv stage: an int is the first stage's width, doubled each stage (capped)."""
    if isinstance(filters, int):
        return [min(filters * 2**i, max_filters) for i in range(stages)]
    widths = [int(f) for f in filters]
    if len(widths) != stages:
        raise ModelError(f"configurable-cnn: filters={widths} names {len(widths)} widths "
                         f"for stages={stages}")
    return widths


def _conv_stage(c_in: int, c_out: int, kernel_size: int, convs: int, dropout: float
                ) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += conv_bn_relu(c_in if i == 0 else c_out, c_out, kernel_size)
    layers += [nn.MaxPool2d(2), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


@register_model("configurable-cnn")
def configurable_cnn(num_classes: int = 7, stages: int = 4, filters: int | Sequence[int] = 64,
                     kernel_size: int = 3, convs_per_stage: int = 1, fc_layers: int = 2,
                     fc_units: int | Sequence[int] = 512, dropout: float = 0.25,
                     fc_dropout: float = 0.5) -> nn.Module:
    """Grid CNN: `stages` conv-BN-ReLU-pool stages, then `fc_layers` FC layers (sweep presets)."""
    if not 1 <= stages <= MAX_STAGES:
        raise ModelError(f"configurable-cnn: stages must be 1..{MAX_STAGES}, got {stages}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ModelError(f"configurable-cnn: kernel_size must be odd and >= 1, got {kernel_size}")
    if fc_layers < 1:
        raise ModelError("configurable-cnn: fc_layers must be >= 1 (the classifier), "
                         f"got {fc_layers}")
    widths = stage_filters(stages, filters)
    blocks: list[nn.Module] = []
    c_in = 1
    for c_out in widths:
        blocks.append(_conv_stage(c_in, c_out, kernel_size, convs_per_stage, dropout))
        c_in = c_out
    side = 48 >> stages
    hidden = fc_layers - 1  # the last FC layer is the classifier
    units = [int(fc_units)] * hidden if isinstance(fc_units, int) else [int(u) for u in fc_units]
    if len(units) != hidden:
        raise ModelError(f"configurable-cnn: fc_units={list(units)} names {len(units)} widths "
                         f"for {hidden} hidden FC layers (fc_layers={fc_layers})")
    head: list[nn.Module] = [nn.Flatten()]
    n_in = c_in * side * side
    for n_out in units:
        head += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU(inplace=True),
                 nn.Dropout(fc_dropout)]
        n_in = n_out
    head.append(nn.Linear(n_in, num_classes))
    return init_weights(nn.Sequential(*blocks, *head))
