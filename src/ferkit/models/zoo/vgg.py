"""vgg1 / vgg2 / vgg3: VGG-style stacks of 1-3 conv-conv-pool blocks (32/64/128 filters)."""

from torch import nn

from ferkit.models.layers import conv_bn_relu, init_weights
from ferkit.models.registry import register_model

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


@register_model("vgg1")
def vgg1(num_classes: int = 7, **kwargs) -> nn.Module:
    """VGG-style, 1 conv-conv-pool block (32 filters) with BN and dropout, dense head of 128."""
    return vgg_blocks(num_classes, depth=1, **kwargs)


@register_model("vgg2")
def vgg2(num_classes: int = 7, **kwargs) -> nn.Module:
    """VGG-style, 2 conv-conv-pool blocks (32/64 filters) with BN and dropout, dense head of 128."""
    return vgg_blocks(num_classes, depth=2, **kwargs)


@register_model("vgg3", reported="56.49% (source project, FER2013 test)")
def vgg3(num_classes: int = 7, **kwargs) -> nn.Module:
    """VGG-style, 3 conv-conv-pool blocks (32/64/128 filters) with BN and dropout, dense head of
    128."""
    return vgg_blocks(num_classes, depth=3, **kwargs)
