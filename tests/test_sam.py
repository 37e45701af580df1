"""ferkit.training.sam: the gradient comes from the ascent point, the weights come back intact,
and BatchNorm statistics count each batch once."""

from __future__ import annotations

import pytest
import torch
from test_training_helpers import make_face_dataset, tiny_config
from torch import nn

from ferkit.training.sam import SharpnessAware, frozen_bn_statistics
from ferkit.training.trainer import train


def _quadratic_grad(w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return 2 * a * w  # d/dw sum(a * w^2)


def test_the_gradient_is_taken_at_w_plus_rho_g_over_its_norm():
    model = nn.Linear(3, 1, bias=False)
    a = torch.tensor([1.0, 4.0, 9.0])
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
    w0 = model.weight.detach().clone()
    sam = SharpnessAware(model, rho=0.1)

    (a * model.weight[0] ** 2).sum().backward()
    g = model.weight.grad.clone()
    sam.ascend()
    assert torch.allclose(model.weight - w0, 0.1 * g / g.norm())
    model.weight.grad = None
    (a * model.weight[0] ** 2).sum().backward()
    sam.descend()

    assert torch.equal(model.weight, w0)  # back where it was, exactly
    expected = _quadratic_grad(w0[0] + 0.1 * g[0] / g.norm(), a)
    assert torch.allclose(model.weight.grad[0], expected)
    assert not torch.allclose(model.weight.grad[0], g[0])  # not the plain gradient


def test_parameters_without_a_gradient_stay_put():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    for p in model[0].parameters():
        p.requires_grad_(False)
    before = [p.detach().clone() for p in model[0].parameters()]
    model(torch.ones(1, 2)).sum().backward()
    sam = SharpnessAware(model, rho=0.5)
    sam.ascend()
    assert all(torch.equal(p, b) for p, b in zip(model[0].parameters(), before, strict=True))
    sam.descend()


def test_rho_must_be_positive():
    with pytest.raises(ValueError, match="rho"):
        SharpnessAware(nn.Linear(1, 1), rho=0.0)


def test_bn_statistics_are_frozen_inside_and_restored_after():
    bn = nn.BatchNorm2d(2, momentum=0.3)
    bn.train()
    mean = bn.running_mean.clone()
    with frozen_bn_statistics(bn):
        bn(torch.randn(4, 2, 3, 3) + 5)
        assert torch.equal(bn.running_mean, mean)
    assert bn.momentum == 0.3
    bn(torch.randn(4, 2, 3, 3) + 5)
    assert not torch.equal(bn.running_mean, mean)


def test_training_with_sam_learns_and_differs_from_plain_sgd(tmp_path):
    dataset = make_face_dataset(n_per_class=24)
    plain = train(tiny_config(tmp_path / "plain", epochs=3), dataset)
    sam = train(tiny_config(tmp_path / "sam", epochs=3, sam=0.05), dataset)
    assert sam.best_val_accuracy > 0.5  # chance is 1/7
    assert sam.history[-1].train_loss != plain.history[-1].train_loss
    assert sam.config.sam == 0.05
