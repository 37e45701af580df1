"""deep-cnn: the 4-conv, 2-FC network of the source projects."""

from torch import nn

from ferkit.models.layers import conv_bn_pool, init_weights
from ferkit.models.registry import register_model


def fc_bn_relu(n_in: int, n_out: int, dropout: float) -> list[nn.Module]:
    """Linear, batch norm, ReLU, dropout: the source projects' dense block."""
    return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU(inplace=True),
            nn.Dropout(dropout)]


@register_model("deep-cnn", reported="65.55% (source project, FER2013 test)")
def deep_cnn(num_classes: int = 7, dropout: float = 0.25,
             filters: tuple[int, ...] = (64, 128, 512, 512), fc: tuple[int, ...] = (256, 512)
             ) -> nn.Module:
    """4 conv layers (64, 128, 512, 512 filters) with BN, dropout, max-pool; FC layers 256, 512."""
    convs, c_in = [], 1
    for c_out in filters:
        convs.append(conv_bn_pool(c_in, c_out, dropout))
        c_in = c_out
    side = 48 // 2 ** len(filters)
    dense, n_in = [], c_in * side * side
    for n_out in fc:
        dense += fc_bn_relu(n_in, n_out, dropout)
        n_in = n_out
    return init_weights(nn.Sequential(*convs, nn.Flatten(), *dense, nn.Linear(n_in, num_classes)))
