"""--mix: MixUp and CutMix blend pairs of faces and their labels in the same shares."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ferkit.errors import ConfigError
from ferkit.training.config import TrainConfig
from ferkit.training.mixing import BatchMix, Mix, cut_box


def _constant_faces(n: int = 8, side: int = 48) -> torch.Tensor:
    """Face i is the constant i + 1, so a mixed pixel tells which faces it came from."""
    return torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, side,
                                                                                side).clone()


def test_mixup_blends_each_face_with_its_partner_by_lam():
    torch.manual_seed(0)
    x = _constant_faces()
    mixed, mix = BatchMix("mixup", alpha=1.0, prob=1.0)(x)
    assert mix is not None and 0 < mix.lam < 1
    assert torch.allclose(mixed, mix.lam * x + (1 - mix.lam) * x[mix.perm])


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_pastes_one_box_and_lam_is_the_share_left(seed):
    torch.manual_seed(seed)
    x = _constant_faces()
    mixed, mix = BatchMix("cutmix", alpha=1.0, prob=1.0)(x)
    assert mix is not None
    for i in range(len(x)):
        j = int(mix.perm[i])
        own = (mixed[i] == x[i]).float().mean().item()
        if j != i:  # a face paired with itself is unchanged
            assert torch.all((mixed[i] == x[i]) | (mixed[i] == x[j]))
            assert own == pytest.approx(mix.lam)
    assert not torch.equal(mixed, x) or mix.lam == 1.0


def test_cut_box_stays_inside_the_image_and_has_the_asked_area_when_centred():
    torch.manual_seed(0)
    for lam in (0.0, 0.3, 0.75, 1.0):
        for _ in range(20):
            top, bottom, left, right = cut_box(48, 40, lam)
            assert 0 <= top <= bottom <= 48 and 0 <= left <= right <= 40
            assert (bottom - top) * (right - left) <= 48 * 40 * (1 - lam) + 1e-9


def test_the_loss_and_soft_targets_blend_the_two_labels():
    perm = torch.tensor([1, 0, 3, 2])
    mix = Mix(perm, 0.3)
    logits = torch.randn(4, 7)
    labels = torch.tensor([0, 1, 2, 3])
    ce = nn.CrossEntropyLoss()
    expected = 0.3 * ce(logits, labels) + 0.7 * ce(logits, labels[perm])
    assert torch.allclose(mix.loss(ce, logits, labels), expected)
    log_p = torch.log_softmax(torch.randn(4, 7), dim=1)
    blended = mix.log_probs(log_p).exp()
    assert torch.allclose(blended, 0.3 * log_p.exp() + 0.7 * log_p.exp()[perm], atol=1e-6)
    assert torch.allclose(blended.sum(1), torch.ones(4), atol=1e-6)
    assert torch.equal(Mix(perm, 1.0).log_probs(log_p), log_p)  # lam 1: nothing pasted


def test_unmixed_batches_pass_through():
    x = _constant_faces()
    assert BatchMix("none")(x) == (x, None)
    torch.manual_seed(0)
    never = BatchMix("cutmix", prob=0.0)
    assert all(never(x)[1] is None for _ in range(20))
    torch.manual_seed(0)
    half = BatchMix("mixup", prob=0.5)
    mixed = sum(half(x)[1] is not None for _ in range(400))
    assert 150 < mixed < 250


def test_bad_mix_options_name_the_option():
    with pytest.raises(ConfigError, match="--mix"):
        TrainConfig(mix="blend").validated()
    with pytest.raises(ConfigError, match="--mix-prob"):
        TrainConfig(mix="cutmix", mix_prob=1.5).validated()
    with pytest.raises(ConfigError, match="--mix-alpha"):
        TrainConfig(mix="mixup", mix_alpha=0).validated()
