"""cnn4: 4 conv stages (64, 64, 128, 128 kernels) and 2 FC layers of 256."""

from torch import nn

from ferkit.models.layers import conv_bn_pool, init_weights
from ferkit.models.registry import register_model
from ferkit.models.zoo.deep_cnn import fc_bn_relu


@register_model("cnn4", reported="71.4% (source project, test split of its own dataset; 64.8% val)")
def cnn4(num_classes: int = 7, dropout: float = 0.25, fc_dropout: float = 0.5) -> nn.Module:
    """4 conv stages (64, 64, 128, 128 kernels) with BN, max-pool, dropout; 2 FC layers of 256."""
    return init_weights(nn.Sequential(
        conv_bn_pool(1, 64, dropout),      # 24x24
        conv_bn_pool(64, 64, dropout),     # 12x12
        conv_bn_pool(64, 128, dropout),    # 6x6
        conv_bn_pool(128, 128, dropout),   # 3x3
        nn.Flatten(),
        *fc_bn_relu(128 * 3 * 3, 256, fc_dropout),
        *fc_bn_relu(256, 256, fc_dropout),
        nn.Linear(256, num_classes),
    ))
