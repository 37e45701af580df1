"""ferkit.training: the trainer learns, writes a complete run directory, resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_training_helpers import learning_metrics, make_face_dataset, tiny_config

from ferkit.errors import DataError, FerkitError, ModelError
from ferkit.models.checkpoint import load_checkpoint
from ferkit.models.predictor import Predictor
from ferkit.training import run_dir as rd
from ferkit.training.config import ConfigError, TrainConfig
from ferkit.training.trainer import TrainResult, train


@pytest.fixture(scope="module")
def dataset():
    return make_face_dataset(n_per_class=24)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset) -> TrainResult:
    out = tmp_path_factory.mktemp("runs") / "run"
    return train(tiny_config(out, epochs=5), dataset)


def test_learns_the_synthetic_classes(trained):
    assert trained.best_val_accuracy > 0.7  # chance is 1/7
    assert 1 <= trained.best_epoch <= 5
    assert [m.epoch for m in trained.history] == [1, 2, 3, 4, 5]
    assert trained.history[-1].train_loss < trained.history[0].train_loss
    assert trained.wall_seconds > 0 and trained.train_seconds > 0


def test_run_directory_is_complete(trained):
    run = trained.run_dir
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "curves.png"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert config.epochs == 5 and config.lr == 0.05 and config.aug_flip == 0.5  # resolved preset
    rows = rd.read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds",
                "images_per_s"):
        assert all(isinstance(r[key], float) for r in rows), key
    assert max(r["val_acc"] for r in rows) == pytest.approx(trained.best_val_accuracy)


def test_checkpoints_carry_what_inference_and_resume_need(trained):
    best = load_checkpoint(trained.run_dir / "best.pt")
    last = load_checkpoint(trained.run_dir / "last.pt")
    for ckpt in (best, last):
        assert ckpt["arch"] == "configurable-cnn" and ckpt["arch_kwargs"]["filters"] == 8
        assert ckpt["classes"][3] == "happy"
        assert 0.2 < ckpt["normalization"]["mean"] < 0.8 and ckpt["normalization"]["std"] > 0
        assert ckpt["config"]["model"] == "configurable-cnn"
    assert best["epoch"] == trained.best_epoch
    assert best["metrics"]["val_acc"] == pytest.approx(trained.best_val_accuracy)
    assert last["epoch"] == 5
    for key in ("optimizer", "scheduler", "rng", "sampler", "early_stopping", "history"):
        assert last[key] is not None, key
    assert set(last["rng"]) >= {"torch", "numpy", "python", "cuda"}


def test_predictor_loads_the_run_directory(trained, dataset):
    predictor = Predictor.load(trained.run_dir, device="cpu")
    val = dataset.split("val")
    probs = predictor.predict_proba(val.images)
    accuracy = float((probs.argmax(1) == val.labels).mean())
    assert accuracy == pytest.approx(trained.best_val_accuracy, abs=1e-6)


def test_same_seed_same_metrics_other_seed_differs(tmp_path, dataset):
    a = train(tiny_config(tmp_path / "a"), dataset)
    b = train(tiny_config(tmp_path / "b"), dataset)
    c = train(tiny_config(tmp_path / "c", seed=1), dataset)
    rows = [learning_metrics(rd.read_metrics(r.run_dir)) for r in (a, b, c)]
    assert rows[0] == rows[1]
    assert rows[0] != rows[2]


class _Killed(Exception):
    pass


@pytest.mark.parametrize("options", [
    {},
    {"ema": 0.9, "balance": "oversample", "schedule": "cosine", "augment": "strong",
     "grad_clip": 1.0, "optimizer": "adamw", "lr": 3e-3, "mix": "cutmix", "sam": 0.05},
], ids=["default", "ema-oversample-cosine-adamw-cutmix-sam"])
def test_resume_ends_exactly_like_an_uninterrupted_run(tmp_path, dataset, options):
    full = train(tiny_config(tmp_path / "full", epochs=3, **options), dataset)

    def kill_after_epoch_2(m):
        if m.epoch == 2:
            raise _Killed

    with pytest.raises(_Killed):
        train(tiny_config(tmp_path / "cut", epochs=3, **options), dataset,
              on_epoch=kill_after_epoch_2)
    # a line of an epoch that was cut off before last.pt was written must not survive
    rd.append_metrics(tmp_path / "cut", {"epoch": 3, "val_acc": 0.0})
    resumed = train(TrainConfig(out=str(tmp_path / "cut"), resume=True, device="cpu", threads=1),
                    dataset)

    rows_full = rd.read_metrics(full.run_dir)
    rows_resumed = rd.read_metrics(resumed.run_dir)
    assert [r["epoch"] for r in rows_resumed] == [1, 2, 3]
    assert learning_metrics(rows_resumed) == learning_metrics(rows_full)
    assert resumed.best_val_accuracy == full.best_val_accuracy
    for name in ("last.pt", "best.pt"):
        w_full = load_checkpoint(full.run_dir / name)["state_dict"]
        w_resumed = load_checkpoint(resumed.run_dir / name)["state_dict"]
        assert all(torch.equal(w_full[k], w_resumed[k]) for k in w_full), name


def test_resuming_a_finished_run_trains_no_more(trained, dataset):
    again = train(TrainConfig(out=str(trained.run_dir), resume=True, device="cpu", threads=1),
                  dataset)
    assert [m.epoch for m in again.history] == [1, 2, 3, 4, 5]
    assert again.train_seconds == 0
    assert len(rd.read_metrics(trained.run_dir)) == 5


@pytest.mark.parametrize("balance", ["none", "weights", "oversample"])
def test_every_balance_mode_trains(tmp_path, balance):
    skewed = make_face_dataset(n_per_class=8)
    extra = make_face_dataset(n_per_class=24, classes=(3,), seed=5)  # many "happy" faces
    images = np.concatenate([skewed.images, extra.images])
    ds = type(skewed)(images, np.concatenate([skewed.labels, extra.labels]),
                      np.concatenate([skewed.splits, extra.splits]),
                      np.concatenate([skewed.names, extra.names]), "skewed")
    result = train(tiny_config(tmp_path / balance, epochs=1, balance=balance), ds)
    assert np.isfinite(result.history[0].train_loss)


@pytest.mark.parametrize("preset", ["none", "light", "default", "strong"])
def test_every_augment_preset_trains(tmp_path, dataset, preset):
    result = train(tiny_config(tmp_path / preset, epochs=1, augment=preset), dataset)
    assert np.isfinite(result.history[0].train_loss)
    assert TrainConfig.from_dict(json.loads((result.run_dir / "config.json").read_text())
                                 ).augment == preset


def test_early_stopping_stops(tmp_path, dataset):
    # patience 1: the first epoch without a strictly better val accuracy ends the run
    result = train(tiny_config(tmp_path / "es", epochs=25, early_stopping=1, lr=0.1), dataset)
    assert result.stopped_early
    assert len(result.history) < 25
    assert result.history[-1].epoch == result.best_epoch + 1
    assert load_checkpoint(result.run_dir / "last.pt")["early_stopping"]["stopped"] is True


def test_ema_model_is_evaluated_and_saved(tmp_path, dataset):
    result = train(tiny_config(tmp_path / "ema", epochs=3, ema=0.8), dataset)
    assert result.best_val_accuracy > 0.5
    last = load_checkpoint(result.run_dir / "last.pt")
    assert last["ema"] is not None and last["train_state_dict"] is not None
    raw, ema = last["train_state_dict"], last["state_dict"]
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    predictor = Predictor.load(result.run_dir / "last.pt", device="cpu")  # loads the EMA weights
    val = dataset.split("val")
    acc = float((predictor.predict_proba(val.images).argmax(1) == val.labels).mean())
    assert acc == pytest.approx(result.history[-1].val_acc, abs=1e-6)


def test_limit_trains_on_n_images(tmp_path, dataset):
    seen = {}
    train(tiny_config(tmp_path / "lim", epochs=1, limit=40, batch_size=16), dataset,
          on_start=lambda info: seen.update(n=info.n_train, steps=info.steps_per_epoch))
    assert seen == {"n": 40, "steps": 2}


def test_holdout_replaces_the_val_split(tmp_path, dataset):
    seen = {}
    train(tiny_config(tmp_path / "ho", epochs=1, holdout=0.25), dataset,
          on_start=lambda info: seen.update(n_val=info.n_val, source=info.val_source))
    n_train = int((dataset.splits == "train").sum())
    assert seen["n_val"] == pytest.approx(0.25 * n_train, abs=7)
    assert "holdout" in seen["source"]


def test_step_callback_reports_progress(tmp_path, dataset):
    steps = []
    train(tiny_config(tmp_path / "cb", epochs=1), dataset, on_step=steps.append)
    assert [s.step for s in steps] == list(range(1, len(steps) + 1))
    assert steps[-1].steps == len(steps) and np.isfinite(steps[-1].loss) and steps[-1].lr > 0


def test_transfer_options_freeze_the_head_first(tmp_path, dataset):
    result = train(tiny_config(tmp_path / "ft", epochs=2, freeze_epochs=1,
                               backbone_lr_scale=0.1), dataset)
    assert len(result.history) == 2


# ---- clear errors --------------------------------------------------------------------------


def test_unknown_model_is_a_model_error(tmp_path, dataset):
    with pytest.raises(ModelError, match="unknown model"):
        train(tiny_config(tmp_path / "x", model="no-such-net"), dataset)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("device", ["tpu", "cuda:x"])
def test_bad_device_is_an_error(tmp_path, dataset, device):
    with pytest.raises(FerkitError, match="--device"):
        train(tiny_config(tmp_path / "x", device=device), dataset)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_an_error(tmp_path, dataset):
    with pytest.raises(FerkitError, match="CUDA"):
        train(tiny_config(tmp_path / "x", device="cuda"), dataset)


@pytest.mark.parametrize("field,value", [("epochs", 0), ("epochs", -3), ("batch_size", 0),
                                         ("lr", -1.0), ("optimizer", "adam"),
                                         ("schedule", "step"), ("balance", "smote"),
                                         ("augment", "max"), ("holdout", 1.5), ("ema", 1.0),
                                         ("sam", -0.1)])
def test_bad_options_are_config_errors(tmp_path, dataset, field, value):
    with pytest.raises(ConfigError):
        train(tiny_config(tmp_path / "x", **{field: value}), dataset)


def test_dataset_without_train_split_is_a_data_error(tmp_path):
    ds = make_face_dataset(n_per_class=4)
    ds.splits[:] = "test"
    with pytest.raises(DataError, match="no training faces"):
        train(tiny_config(tmp_path / "x"), ds)


def test_no_val_split_and_no_holdout_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="holdout"):
        train(tiny_config(tmp_path / "x", holdout=0.0), make_face_dataset(8, val_every=None))


def test_an_existing_run_is_not_overwritten(trained, dataset):
    with pytest.raises(ModelError, match="--resume"):
        train(tiny_config(trained.run_dir), dataset)


def test_resume_needs_a_run_directory(tmp_path, dataset):
    with pytest.raises(ConfigError, match="--out"):
        train(TrainConfig(resume=True), dataset)
    with pytest.raises(ModelError, match="no such run"):
        train(TrainConfig(resume=True, out=str(tmp_path / "nope")), dataset)


def test_on_epoch_returning_true_stops_after_that_epoch(tmp_path, dataset):
    seen = []

    def stop_at_2(m):
        seen.append(m.epoch)
        return m.epoch == 2

    result = train(tiny_config(tmp_path / "stop", epochs=4), dataset, on_epoch=stop_at_2)
    assert seen == [1, 2] and len(result.history) == 2
    assert result.stopped_by_callback and not result.stopped_early
    assert load_checkpoint(result.run_dir / "last.pt")["epoch"] == 2
    assert result.best_val_acc == result.best_val_accuracy


def test_the_ensemble_entry_is_not_trainable(tmp_path, dataset):
    with pytest.raises(ConfigError, match="not trained"):
        train(tiny_config(tmp_path / "ens", model="ensemble"), dataset)


def test_checkpoints_hold_the_normalisation_in_the_state_dict(trained):
    best = load_checkpoint(trained.run_dir / "best.pt")
    assert best["version"] == 2
    sd = best["state_dict"]
    assert float(sd["normalize.mean"]) == pytest.approx(best["normalization"]["mean"])
    assert float(sd["normalize.std"]) == pytest.approx(best["normalization"]["std"])
    assert all(k.startswith(("normalize.", "net.")) for k in sd)
