"""shallow-cnn: the 2-conv-layer baseline of the source projects, and the zoo's shared blocks."""

from torch import nn

from ferkit.models.registry import register_model


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
