"""ferkit report: one self-contained HTML page comparing run directories."""

from __future__ import annotations

import base64
import json
import re

import pytest
from test_sweep_helpers import TINY, face_dataset
from typer.testing import CliRunner

from ferkit.cli.app import app
from ferkit.errors import ModelError
from ferkit.evaluation.report import collect_runs, config_diff, load_run, write_report
from ferkit.training.config import TrainConfig
from ferkit.training.trainer import train


@pytest.fixture(scope="module")
def dataset():
    return face_dataset()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dataset):
    """Two tiny runs that differ in lr, epochs and width; the first has an evaluation JSON."""
    root = tmp_path_factory.mktemp("runs")
    out = []
    for name, lr, epochs, filters in (("alpha", 0.05, 2, 4), ("beta", 0.02, 1, 6)):
        config = TrainConfig(model="configurable-cnn",
                             model_kwargs={**TINY, "stages": 2, "filters": filters},
                             epochs=epochs, batch_size=32, lr=lr, device="cpu", augment="none",
                             out=str(root / name))
        train(config, dataset=dataset)
        out.append(root / name)
    (out[0] / "eval").mkdir()
    (out[0] / "eval" / "metrics.json").write_text(json.dumps(
        {"accuracy": 0.5, "macro_f1": 0.4321, "split": "test", "n": 10}))
    return out


def images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_html_compares_every_run_with_embedded_figures(runs, dataset, tmp_path):
    path, records = write_report(runs, tmp_path / "report.html", data=dataset, device="cpu")
    page = path.read_text()
    for run in runs:
        assert run.name in page
    pngs = images(page)
    assert len(pngs) == 3  # curves + one confusion matrix per run
    assert all(p[:4] == b"\x89PNG" for p in pngs)
    assert "<link" not in page and "<script src" not in page and "http" not in page
    # table: model, parameters, epochs, best val acc, macro-F1 (evaluation JSON / --data)
    assert "configurable-cnn" in page and "0.4321" in page
    assert [r.epochs for r in records] == [2, 1]
    assert all(r.confusion is not None and r.confusion.sum() == 28 for r in records)
    assert records[1].macro_f1[1] == "val (--data)"
    assert records[0].n_parameters and records[0].n_parameters < records[1].n_parameters


def test_config_diff_lists_only_the_options_that_differ(runs):
    diff = dict(config_diff([load_run(r) for r in runs]))
    assert set(diff) == {"lr", "epochs", "model_kwargs.filters"}
    assert diff["lr"] == [0.05, 0.02]


def test_without_data_no_confusion_matrices_but_curves(runs, tmp_path):
    path, records = write_report(runs[:1], tmp_path / "one.html")
    page = path.read_text()
    assert len(images(page)) == 1 and "Pass --data PATH" in page
    assert "one run: nothing to compare" in page


def test_not_a_run_is_a_clear_error(runs, tmp_path):
    with pytest.raises(ModelError, match="no such run directory"):
        load_run(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="empty: not a ferkit run directory"):
        collect_runs([runs[0], tmp_path / "empty"])
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelError, match="file.txt: not a run directory"):
        load_run(tmp_path / "file.txt")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{oops")
    with pytest.raises(ModelError, match="config.json: not valid JSON"):
        load_run(bad)


def test_cli_report(runs, tmp_path):
    out = tmp_path / "cli.html"
    res = CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "compared 2 runs" in res.output and out.exists()
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code != 0 and "no such run directory" in str(res.exception)
