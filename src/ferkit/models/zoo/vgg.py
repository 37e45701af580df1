"""vgg1 / vgg2 / vgg3: VGG-style stacks of 1-3 conv-conv-pool blocks (32/64/128 filters)."""

from functools import partial

from torch import nn

from ferkit.models.registry import register_model
from ferkit.models.zoo.shallow_cnn import conv_bn_relu, init_weights

_FILTERS = (32, 64, 128)


def vgg_blocks(num_classes: int = 7, depth: int = 3, dense: int = 128,
               dropout: tuple[float, ...] = (0.2, 0.3, 0.4), head_dropout: float = 0.5
               ) -> nn.Module:
    """`depth` blocks of [3x3 conv-BN-ReLU x2, max-pool, dropout], then dense-BN-ReLU-dropout."""
    if not 1 <= depth <= len(_FILTERS):
        raise ValueError(f"depth must be 1..{len(_FILTERS)}, got {depth}")
    layers, c_in = [], 1
    for i in range(depth):
        c_out = _FILTERS[i]
        layers += [*conv_bn_relu(c_in, c_out), *conv_bn_relu(c_out, c_out),
                   nn.MaxPool2d(2), nn.Dropout(dropout[i])]
        c_in = c_out
    side = 48 // 2 ** depth
    return init_weights(nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(c_in * side * side, dense),
        nn.BatchNorm1d(dense),
        nn.ReLU(inplace=True),
        nn.Dropout(head_dropout),
        nn.Linear(dense, num_classes),
    ))


def _register(depth: int, reported: str) -> None:
    factory = partial(vgg_blocks, depth=depth)
    filters = "/".join(str(f) for f in _FILTERS[:depth])
    factory.__doc__ = (f"VGG-style, {depth} conv-conv-pool block{'s' * (depth > 1)} ({filters} "
                       "filters) with BN and dropout, dense head of 128.")
    register_model(f"vgg{depth}", reported=reported)(factory)


_register(1, "")
_register(2, "")
_register(3, "56.49% (source project, FER2013 test)")
