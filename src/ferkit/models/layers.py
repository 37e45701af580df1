"""Building blocks shared by the zoo's architectures (as timm keeps them in timm.layers)."""

from torch import nn


def conv_bn_pool(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    """3x3 conv, batch norm, ReLU, 2x2 max-pool, dropout: the source projects' building block."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout(dropout),
    )


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    """kxk conv (no bias, 'same' padding), BN, ReLU: a list to splice into a Sequential."""
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def init_weights(model: nn.Module) -> nn.Module:
    """Kaiming-normal (fan-out, ReLU) convs, unit BN, zero biases; Linear weights keep torch's."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return model
