"""Faults during training: resuming on other data, a full disk, a --limit larger than the data,
Ctrl-C before the first epoch is saved, and exit codes of bad options."""

from __future__ import annotations

import errno
import logging
import os
import types

import numpy as np
import pytest
from cli_support import run_ferkit
from synth import make_csv_dataset
from test_training_helpers import make_face_dataset, tiny_config

from ferkit.data.dataset import FaceDataset
from ferkit.errors import DataError, ModelError
from ferkit.models import checkpoint as ckpt_mod
from ferkit.training.config import TrainConfig
from ferkit.training.trainer import train


@pytest.fixture(scope="module")
def dataset():
    return make_face_dataset(n_per_class=24)


class _Stop(Exception):
    pass


def _stop_after_1(m):
    if m.epoch == 1:
        raise _Stop


def _resume(out, ds):
    return train(TrainConfig(out=str(out), resume=True, device="cpu", threads=1), ds)


def test_resume_refuses_relabelled_data_of_the_same_size(tmp_path, dataset):
    out = tmp_path / "run"
    with pytest.raises(_Stop):
        train(tiny_config(out, epochs=3), dataset, on_epoch=_stop_after_1)
    labels = dataset.labels.copy()
    train_pos = np.flatnonzero(dataset.splits == "train")
    labels[train_pos[0]] = (labels[train_pos[0]] + 1) % 7
    other = FaceDataset(dataset.images, labels, dataset.splits, dataset.names, "other")
    with pytest.raises(DataError, match="cannot resume on other data.*training faces: same "
                                        "count .* other images or labels"):
        _resume(out, other)


def test_resume_refuses_another_validation_set(tmp_path, dataset):
    out = tmp_path / "run"
    with pytest.raises(_Stop):
        train(tiny_config(out, epochs=3), dataset, on_epoch=_stop_after_1)
    splits = dataset.splits.copy()
    splits[np.flatnonzero(splits == "val")[:3]] = "test"  # 3 fewer val faces, same train
    other = FaceDataset(dataset.images, dataset.labels, splits, dataset.names, "other")
    with pytest.raises(DataError, match="validation faces: the run had 42, this data gives 39"):
        _resume(out, other)
    assert _resume(out, dataset).history[-1].epoch == 3  # the run's own data still resumes


class _FullDisk:
    """A file whose writes fail as a full disk does."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def _fill_the_disk(monkeypatch):
    """checkpoint.py's writes fail with ENOSPC (its own `os` only: the test runner's stays)."""
    fake_os = types.SimpleNamespace(**vars(os))
    fake_os.fdopen = lambda fd, mode: _FullDisk(os.fdopen(fd, mode))
    monkeypatch.setattr(ckpt_mod, "os", fake_os)


def test_a_full_disk_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt_mod.save_checkpoint(path, {"epoch": 1})
    before = path.read_bytes()
    _fill_the_disk(monkeypatch)
    with pytest.raises(ModelError) as info:
        ckpt_mod.save_checkpoint(path, {"epoch": 2})
    message = str(info.value)
    assert str(path) in message and "the disk is full" in message
    assert "previous last.pt is kept" in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


def test_train_on_a_full_disk_fails_with_the_disk_error(tmp_path, monkeypatch, capsys):
    csv = make_csv_dataset(tmp_path, n_per_class=8)
    _fill_the_disk(monkeypatch)
    code, _, err = run_ferkit(monkeypatch, capsys, "train", "--data", csv, "--model",
                              "configurable-cnn", "--model-arg", "stages=1", "--epochs", "1",
                              "--device", "cpu", "--threads", "1", "--out", tmp_path / "r")
    assert code == 1
    assert "cannot write the checkpoint (the disk is full)" in err and "enforce fail" not in err
    assert err.startswith("error: ")  # no blank line before it


def test_limit_larger_than_the_data_says_so(tmp_path, dataset, caplog):
    with caplog.at_level(logging.WARNING):
        result = train(tiny_config(tmp_path / "r", epochs=1, limit=5000), dataset)
    n_train = int((dataset.splits == "train").sum())
    assert f"--limit 5000: the data has only {n_train:,} training faces" in caplog.text
    assert result.history


@pytest.mark.parametrize("args", [["--epochs", "0"], ["--batch-size", "0"], ["--lr", "-1"],
                                  ["--holdout", "1.5"], ["--limit", "-3"], ["--augment", "wild"],
                                  ["--amp", "fast"]])
def test_bad_option_values_exit_2_like_usage_errors(tmp_path, monkeypatch, capsys, args):
    csv = make_csv_dataset(tmp_path, n_per_class=2)
    code, _, err = run_ferkit(monkeypatch, capsys, "train", "--data", csv, "--device", "cpu",
                              "--out", tmp_path / "r", *args)
    assert code == 2, err
    assert err.startswith("error: --")


def test_resume_without_out_exits_2(monkeypatch, capsys):
    code, _, err = run_ferkit(monkeypatch, capsys, "train", "--resume")
    assert code == 2 and "--resume needs --out" in err


def test_ctrl_c_in_the_first_epoch_does_not_claim_a_saved_epoch(tmp_path, monkeypatch, capsys):
    csv = make_csv_dataset(tmp_path, n_per_class=8)

    def interrupt(s):
        raise KeyboardInterrupt

    import ferkit.cli.train as cli_train

    monkeypatch.setattr(cli_train._ProgressView, "on_step", lambda self, s: interrupt(s))
    code, out, err = run_ferkit(monkeypatch, capsys, "train", "--data", csv, "--model",
                                "configurable-cnn", "--model-arg", "stages=1", "--epochs", "2",
                                "--device", "cpu", "--threads", "1", "--out", tmp_path / "r")
    assert code == 130
    assert "nothing was saved yet" in out and "last finished epoch is saved" not in out
