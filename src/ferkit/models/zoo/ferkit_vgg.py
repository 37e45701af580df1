"""ferkit-vgg: ferkit's accuracy model, a modern VGG (conv-BN-ReLU pairs, 4 stages, GAP head)."""

from torch import nn

from ferkit.models.layers import conv_bn_relu, init_weights
from ferkit.models.registry import register_model


@register_model("ferkit-vgg")
def ferkit_vgg(num_classes: int = 7, width: int = 64, convs_per_stage: int = 2,
               dropout: float = 0.4) -> nn.Module:
    """Modern VGG: 4 stages of 3x3 conv-BN-ReLU pairs (64-128-256-512 at width 64), GAP head."""
    layers, c_in = [], 1
    for i in range(4):
        c_out = width * 2 ** i
        if i:
            layers.append(nn.MaxPool2d(2))  # 48 -> 24 -> 12 -> 6
        for _ in range(convs_per_stage):
            layers += conv_bn_relu(c_in, c_out)
            c_in = c_out
    return init_weights(nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
        nn.Linear(c_in, num_classes),
    ))
