"""shallow-cnn: the 2-conv-layer baseline of the source projects."""

from torch import nn

from ferkit.models.layers import conv_bn_pool, init_weights
from ferkit.models.registry import register_model


@register_model("shallow-cnn", reported="56.31% (source project, FER2013 test)")
def shallow_cnn(num_classes: int = 7, dropout: float = 0.25) -> nn.Module:
    """2 conv layers (32, 64 filters) with BN, dropout and max-pool, one FC layer of 512."""
    return init_weights(nn.Sequential(
        conv_bn_pool(1, 32, dropout),
        conv_bn_pool(32, 64, dropout),
        nn.Flatten(),
        nn.Linear(64 * 12 * 12, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(512, num_classes),
    ))
