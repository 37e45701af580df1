"""`ferkit train` through the Typer app: a smoke run on a synthetic CSV, resume, errors, --help."""

from __future__ import annotations

import json
import re

import pytest
from synth import make_csv_dataset
from test_training_helpers import TINY_KWARGS, TINY_MODEL
from typer.testing import CliRunner

from ferkit.cli.app import app
from ferkit.errors import ModelError
from ferkit.models.predictor import Predictor
from ferkit.training.config import ConfigError

runner = CliRunner()
TINY = ["--model", TINY_MODEL] + [a for k, v in TINY_KWARGS.items()
                                  for a in ("--model-arg", f"{k}={v}")]


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    return make_csv_dataset(tmp_path_factory.mktemp("data"), n_per_class=20)


@pytest.fixture(scope="module")
def cli_run(csv_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    args = ["train", "--data", str(csv_path), *TINY, "--epochs", "2", "--batch-size", "16",
            "--device", "cpu", "--threads", "1", "--seed", "3", "--out", str(out)]
    return runner.invoke(app, args), out


def test_train_smoke_writes_a_usable_run(cli_run):
    result, out = cli_run
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "best val accuracy" in result.output and str(out) in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"]  # a plain line per epoch (a pipe)
    assert all(len(ln) <= 80 for ln in lines)
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "curves.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == TINY_MODEL and config["model_kwargs"] == TINY_KWARGS
    assert config["seed"] == 3 and config["batch_size"] == 16
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert Predictor.load(out, device="cpu").arch == TINY_MODEL


def test_sam_is_shown_in_the_header_and_saved(csv_path, tmp_path):
    out = tmp_path / "sam"
    result = runner.invoke(app, ["train", "--data", str(csv_path), *TINY, "--epochs", "1",
                                 "--batch-size", "16", "--device", "cpu", "--threads", "1",
                                 "--sam", "0.05", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    header = next(ln for ln in result.output.splitlines() if "steps of 16" in ln)
    assert header.endswith("; sam 0.05") and len(header) <= 80
    assert json.loads((out / "config.json").read_text())["sam"] == 0.05


def test_resume_of_a_finished_run_adds_nothing(cli_run):
    _, out = cli_run
    result = runner.invoke(app, ["train", "--resume", "--out", str(out), "--device", "cpu",
                                 "--threads", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "resuming" in result.output and "after epoch 2" in result.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_config_file_with_overrides(cli_run, csv_path, tmp_path):
    _, out = cli_run
    new = tmp_path / "again"
    result = runner.invoke(app, ["train", "--config", str(out / "config.json"), "--epochs", "1",
                                 "--out", str(new), "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(result.output[result.output.index("{"):])
    assert report["epochs_run"] == 1 and report["run_dir"] == str(new)
    config = json.loads((new / "config.json").read_text())
    assert config["epochs"] == 1 and config["seed"] == 3 and config["model_kwargs"] == TINY_KWARGS


@pytest.mark.parametrize("args,error", [
    (["--model", "no-such-net"], ModelError),
    (["--epochs", "0"], ConfigError),
    (["--device", "tpu"], ConfigError),
    (["--balance", "smote"], ConfigError),
    (["--model-arg", "oops"], ConfigError),
    (["--model", "ferkit-small", "--model-arg", "head=dense"], ModelError),
    (["--model", "ferkit-small", "--model-arg", "depth=3"], ModelError),
])
def test_bad_options_fail_clearly(csv_path, tmp_path, args, error):
    result = runner.invoke(app, ["train", "--data", str(csv_path), "--out", str(tmp_path / "r"),
                                 "--device", "cpu", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, error), repr(result.exception)


def test_data_is_required(tmp_path):
    result = runner.invoke(app, ["train", "--epochs", "1"])
    assert isinstance(result.exception, ConfigError) and "--data" in str(result.exception)


def test_help_has_examples():
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    assert "Examples" in result.output and "--resume" in result.output
    assert "--balance" in result.output and "--holdout" in result.output


def _metrics(epoch: int, **kw):
    from ferkit.training.trainer import EpochMetrics

    base = dict(epoch=epoch, train_loss=1.2345, train_acc=1.0, val_acc=1.0, val_loss=1.0,
                lr=0.01, epoch_seconds=1.0, images_per_s=123_456.0, best_val_acc=1.0,
                best_epoch=epoch)
    return EpochMetrics(**{**base, **kw})


def test_epoch_lines_fit_80_columns_in_the_worst_case():
    from ferkit.cli.train import epoch_line

    line = epoch_line(_metrics(150), 1500, eta_seconds=99 * 3600)
    assert len(line) <= 80 and line.startswith("epoch 150/1500 ") and "best" in line
    assert "  " in epoch_line(_metrics(3, images_per_s=4000.0), 30, 250)  # roomy when it fits


def test_terminal_progress_stays_readable_at_80_columns():
    import io

    import torch
    from rich.console import Console

    from ferkit.cli.train import _ProgressView
    from ferkit.training.trainer import StepMetrics

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=80, color_system=None)
    view = _ProgressView(console, live=True)
    for epoch in (1, 2):
        for step in (1, 224):
            view.on_step(StepMetrics(epoch, 150, step, 224, step * 128, 0.5 * step, 0.01,
                                     torch.tensor(1.5 * step)))
        view.on_epoch(_metrics(epoch, images_per_s=12_345.0))
    view.stop()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", buf.getvalue())  # cursor moves: new lines
    assert "epoch 1/150" in text and "epoch 2/150" in text and "…" not in text
    assert "224/224" in text  # the live bar kept its step column
    finished = [ln for ln in text.splitlines() if ln.startswith("epoch 2/150  loss")]
    assert finished and "val 100.0% best" in finished[0], text


def test_resume_from_another_folder_finds_the_data_or_names_it(csv_path, tmp_path, monkeypatch,
                                                                capsys):
    """config.json keeps --data as given (relative) and its absolute path beside it: --resume
    works from any folder; where neither exists, the error names the dataset and --data."""
    import shutil

    from cli_support import run_ferkit

    from ferkit.errors import DataError
    from ferkit.training.config import TrainConfig
    from ferkit.training.trainer import train

    started, elsewhere = tmp_path / "started", tmp_path / "elsewhere"
    started.mkdir(), elsewhere.mkdir()
    shutil.copy(csv_path, started / "faces.csv")
    out = tmp_path / "run"
    monkeypatch.chdir(started)  # the run, stopped after epoch 1 of 3 (as a kill would)
    cut = train(TrainConfig(data="faces.csv", model=TINY_MODEL, model_kwargs=dict(TINY_KWARGS),
                            epochs=3, batch_size=16, device="cpu", threads=1, amp="off",
                            out=str(out)), on_epoch=lambda m: True)
    assert cut.stopped_by_callback
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == "faces.csv"
    assert config["execution"]["data_resolved"] == str(started / "faces.csv")

    monkeypatch.chdir(elsewhere)  # through the API (train loads the data), then the CLI
    again = train(TrainConfig(out=str(out), resume=True, device="cpu", threads=1),
                  on_epoch=lambda m: True)
    assert [m.epoch for m in again.history] == [1, 2]
    result = runner.invoke(app, ["train", "--resume", "--out", str(out), "--device", "cpu",
                                 "--threads", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3

    (started / "faces.csv").rename(started / "moved.csv")  # e.g. resumed on another machine
    result = runner.invoke(app, ["train", "--resume", "--out", str(out), "--device", "cpu"])
    assert isinstance(result.exception, DataError)
    code, _, err = run_ferkit(monkeypatch, capsys, "train", "--resume", "--out", out)
    assert code == 1 and "--data" in err and str(started / "faces.csv") in err, err
    result = runner.invoke(app, ["train", "--resume", "--out", str(out), "--device", "cpu",
                                 "--threads", "1", "--data", str(started / "moved.csv")])
    assert result.exit_code == 0, result.output + repr(result.exception)
