"""`ferkit train` through the Typer app: a smoke run on a synthetic CSV, resume, errors, --help."""

from __future__ import annotations

import json

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
    assert "epoch 2/2" in result.output
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "curves.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == TINY_MODEL and config["model_kwargs"] == TINY_KWARGS
    assert config["seed"] == 3 and config["batch_size"] == 16
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert Predictor.load(out, device="cpu").arch == TINY_MODEL


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
