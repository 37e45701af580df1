"""Training building blocks: config, holdout split, class balance, schedule, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_training_helpers import make_face_dataset

from ferkit.training.augment import BatchAugment
from ferkit.training.balance import EpochSampler, class_weights
from ferkit.training.config import PRESETS, ConfigError, TrainConfig
from ferkit.training.curves import plot_curves
from ferkit.training.optim import build_optimizer, build_scheduler, param_groups
from ferkit.training.splits import normalization_stats, split_train_val, stratified_holdout


def test_config_round_trips_and_resolves_defaults():
    c = TrainConfig(model="cnn4", optimizer="adamw", augment="strong", aug_flip=0.0).validated()
    assert c.lr == 2e-3 and c.weight_decay == 0.05 and c.warmup == 0.25
    assert c.aug_rotate == PRESETS["strong"]["aug_rotate"] and c.aug_flip == 0.0  # override kept
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown training option"):
        TrainConfig.from_dict({**c.to_dict(), "bogus": 1})
    assert TrainConfig.from_dict({**c.to_dict(), "bogus": 1}, strict=False) == c


def test_holdout_is_stratified_fixed_and_seeded():
    labels = np.repeat(np.arange(7), [400, 40, 300, 700, 500, 300, 500])
    a = stratified_holdout(labels, 0.1, seed=0)
    assert np.array_equal(a, stratified_holdout(labels, 0.1, seed=0))
    assert not np.array_equal(a, stratified_holdout(labels, 0.1, seed=1))
    per_class = np.bincount(labels[a], minlength=7)
    assert per_class.tolist() == [40, 4, 30, 70, 50, 30, 50]
    assert len(np.unique(a)) == len(a)
    # a rare class still gets one held-out face, and keeps one for training
    assert stratified_holdout(np.array([0, 0, 1, 1, 1]), 0.1).tolist() != []


def test_split_uses_the_val_split_else_a_default_holdout():
    ds = make_face_dataset(n_per_class=20)
    s = split_train_val(ds)
    assert s.val_source == "val split" and len(s.val_labels) == int((ds.splits == "val").sum())
    no_val = make_face_dataset(n_per_class=20, val_every=None)
    s = split_train_val(no_val)
    assert "holdout 10%" in s.val_source and len(s.val_labels) == 14
    assert len(s.train_labels) + len(s.val_labels) == len(no_val)
    # the holdout is drawn before --limit, so it does not move with the limit
    s1, s2 = split_train_val(no_val, 0.2, limit=30), split_train_val(no_val, 0.2)
    assert np.array_equal(s1.val_images, s2.val_images) and len(s1.train_labels) == 30


def test_limit_is_a_fixed_subset_that_keeps_the_class_mix():
    ds = make_face_dataset(n_per_class=40)  # faces listed class by class, like image folders
    a, b = split_train_val(ds, limit=70), split_train_val(ds, limit=70)
    assert len(a.train_labels) == 70 and np.array_equal(a.train_images, b.train_images)
    assert (np.bincount(a.train_labels, minlength=7) >= 4).all()
    assert len(split_train_val(ds, limit=10_000).train_labels) == int((ds.splits == "train").sum())


def test_normalization_stats_match_numpy():
    images = np.random.default_rng(0).integers(0, 256, (50, 48, 48), dtype=np.uint8)
    mean, std = normalization_stats(images)
    assert mean == pytest.approx(images.mean() / 255, rel=1e-9)
    assert std == pytest.approx((images / 255).std(), rel=1e-9)


def test_class_weights_move_towards_balance():
    counts = np.array([400, 40, 400, 800, 400, 400, 400])
    w = class_weights(counts, power=1.0)
    assert np.allclose(w * counts, (w * counts)[0])  # fully balanced
    assert (w * counts).sum() == pytest.approx(counts.sum())
    half = class_weights(counts, power=0.5)
    assert half[1] > half[0] > half[3]
    assert class_weights(np.array([10, 0, 10]))[1] == 0


def test_oversampling_draws_minority_classes_more_often():
    labels = np.repeat(np.arange(7), [300, 20, 300, 600, 300, 300, 300])
    plain = EpochSampler(labels, 64, "none", 0.5, seed=0, device=torch.device("cpu"))
    over = EpochSampler(labels, 64, "oversample", 1.0, seed=0, device=torch.device("cpu"))
    idx_plain, idx_over = plain.epoch().flatten().numpy(), over.epoch().flatten().numpy()
    assert len(np.unique(idx_plain)) == len(idx_plain)  # a permutation
    share = np.bincount(labels[idx_over], minlength=7) / len(idx_over)
    assert share[1] > 0.1 and share[3] < 0.2  # ~1/7 each
    state = over.state_dict()
    first = over.epoch()
    over.load_state_dict(state)
    assert torch.equal(first, over.epoch())


def test_no_weight_decay_on_batchnorm_and_bias():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 46 * 46, 7))
    groups = param_groups(model, TrainConfig().validated())
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[3].weight)}


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_schedules_warm_up_then_decay(schedule):
    model = torch.nn.Linear(3, 2)
    c = TrainConfig(schedule=schedule, lr=0.1).validated()
    opt = build_optimizer(model, c, torch.device("cpu"))
    sched = build_scheduler(opt, c, 100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = int(np.argmax(lrs))
    assert 0 < peak < 50 and max(lrs) == pytest.approx(0.1, rel=0.05) and lrs[-1] < 0.01


def test_batch_augment_keeps_shape_and_gives_pixels():
    x = torch.randint(0, 256, (16, 1, 48, 48), dtype=torch.uint8)
    for preset in PRESETS:
        aug = BatchAugment(TrainConfig(augment=preset).validated(), fill=0.5)
        out = aug(x, train=True)
        assert out.shape == (16, 1, 48, 48) and out.dtype == torch.float32
        assert aug.active == (preset != "none")
    plain = BatchAugment(TrainConfig(augment="strong").validated(), 0.5)(x, train=False)
    assert torch.equal(plain, x.float() / 255)  # the model normalises, not the augmentation


def test_erased_patches_hold_the_mean_pixel():
    x = torch.zeros((8, 1, 48, 48), dtype=torch.uint8)
    aug = BatchAugment(TrainConfig(augment="none", aug_erase=1.0).validated(), fill=0.4)
    values = aug(x, train=True).unique().tolist()
    assert values == [0.0, pytest.approx(0.4)]


def test_curves_png(tmp_path):
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 0.1 * e,
             "val_acc": 0.09 * e} for e in range(1, 6)]
    path = plot_curves(rows, tmp_path / "curves.png", "test")
    assert path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("total", range(1, 13))
def test_onecycle_runs_for_any_number_of_steps(total):
    """PyTorch's OneCycleLR divides by zero when warm-up ends at step 0 (4 steps at 0.25)."""
    model = torch.nn.Linear(3, 2)
    c = TrainConfig(schedule="onecycle", lr=0.1, warmup=0.25).validated()
    opt = build_optimizer(model, c, torch.device("cpu"))
    sched = build_scheduler(opt, c, total)
    for _ in range(total):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] < 0.1


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_train_state_round_trips_through_last_pt_entries(ema):
    """TrainState.state_dict() holds exactly last.pt's resume entries, and load_state_dict() of
    them (with the saved model's weights, as last.pt holds them) gives the same state back."""
    from torch import nn

    from ferkit.training.distributed import Dist
    from ferkit.training.trainer import EpochMetrics, TrainState

    def state(seed: int) -> TrainState:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
        config = TrainConfig(epochs=2, ema=ema, batch_size=4).validated()
        sampler = EpochSampler(np.arange(8) % 3, 4, "none", 0.5, seed, torch.device("cpu"))
        data = {"n_train": 8, "n_val": 2, "steps_per_epoch": 2, "train_digest": "t",
                "val_digest": "v"}
        return TrainState.start(config, model, sampler, data, torch.device("cpu"))

    a = state(0)
    loss = a.model(torch.randn(4, 4)).sum()
    loss.backward()
    a.optimizer.step()
    a.scheduler.step()
    if a.ema is not None:
        a.ema.update_parameters(a.model)
    a.sampler.epoch()
    a.end_epoch(EpochMetrics(1, 1.0, 0.5, 1.1, 0.4, 0.1, 2.0, 4.0), patience=0)
    saved = a.state_dict()
    assert list(saved) == ["epoch", "train_state_dict", "optimizer", "scheduler", "ema", "sampler",
                           "rng", "world_size", "rng_ranks", "early_stopping", "history", "data"]
    assert (saved["train_state_dict"] is None) == (ema == 0.0)
    weights = {k: v.clone() for k, v in a.eval_model.state_dict().items()}
    last_pt = {**saved, "state_dict": weights, "path": "last.pt", "config": {"seed": 0}}

    b = state(1)
    b.load_state_dict(last_pt, Dist())
    assert (b.epoch, b.best_val_acc, b.best_epoch, b.history) == (1, 0.4, 1, a.history)
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert torch.equal(a.sampler.epoch(), b.sampler.epoch())
    assert b.optimizer.state_dict()["state"].keys() == a.optimizer.state_dict()["state"].keys()
    assert b.scheduler.state_dict() == a.scheduler.state_dict()
