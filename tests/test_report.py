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
                             amp="off",  # auto's timed choice could differ by noise between them
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


def test_metrics_are_read_by_the_run_directorys_reader(tmp_path):
    """The report reads metrics.jsonl with training.run_dir.read_metrics: a line that is not
    JSON names the file and the line; blank lines and non-objects are left out."""
    from ferkit.training import run_dir as rd

    run = tmp_path / "run"
    run.mkdir()
    (run / rd.METRICS).write_text('{"epoch": 1, "val_acc": 0.5}\n\n[1]\n'
                                  '{"epoch": 2, "val_acc": 0.6}\n')
    assert [m["epoch"] for m in load_run(run).metrics] == [1, 2] == \
        [m["epoch"] for m in rd.read_metrics(run)]
    assert load_run(run).last["val_acc"] == 0.6
    (run / rd.METRICS).write_text('{"epoch": 1, "val_acc": 0.5}\n{"epoch": 2, "val\n')
    for read in (load_run, rd.read_metrics):
        with pytest.raises(ModelError, match=r"metrics.jsonl: line 2 is not JSON"):
            read(run)


def test_cli_report(runs, tmp_path):
    out = tmp_path / "cli.html"
    res = CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "compared 2 runs" in res.output and out.exists()
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code != 0 and "no such run directory" in str(res.exception)


def _copy_run(src, dst, **changes):
    """A copy of a run directory with its config.json edited (None deletes a key)."""
    import shutil

    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory, runs, dataset):
    """alpha again with seed 1 (a real second seed), and an alpha written by an older ferkit
    (no `sam` option recorded) with seed 7; beta is another recipe."""
    root = tmp_path_factory.mktemp("seeds")
    config = TrainConfig.from_dict({**json.loads((runs[0] / "config.json").read_text()),
                                    "seed": 1, "out": str(root / "alpha-s1")}, strict=False)
    train(config, dataset=dataset)
    old = _copy_run(runs[0], root / "alpha-old", seed=7, sam=None)
    return [runs[0], root / "alpha-s1", old, runs[1]]


def test_runs_that_differ_only_in_seed_are_one_recipe_with_mean_and_spread(seed_runs):
    from ferkit.evaluation.report import seed_groups

    records = [load_run(r) for r in seed_runs]
    groups = seed_groups(records)
    assert [len(g.runs) for g in groups] == [3, 1]
    assert groups[0].seeds == [0, 1, 7]
    assert "lr=0.05" in groups[0].label and "lr=0.02" in groups[1].label
    assert "seed" not in groups[0].label and "sam" not in groups[0].label
    last = [r.last["val_acc"] for r in records[:3]]
    st = groups[0].stats("last")
    assert st["n"] == 3 and st["mean"] == pytest.approx(sum(last) / 3)
    mean = sum(last) / 3
    assert st["sd"] == pytest.approx((sum((v - mean) ** 2 for v in last) / 2) ** 0.5)
    assert (st["min"], st["max"]) == (min(last), max(last))
    assert groups[1].stats("last")["sd"] == 0.0
    # an option an older ferkit did not record is at its default, not a difference
    assert "sam" not in dict(config_diff(records))


def test_recipe_labels_leave_out_what_the_augment_preset_implies(runs, tmp_path):
    from ferkit.evaluation.report import seed_groups
    from ferkit.training.config import PRESETS

    light = _copy_run(runs[0], tmp_path / "light", augment="light", **PRESETS["light"])
    labels = [g.label for g in seed_groups([load_run(runs[0]), load_run(light)])]
    assert labels == ["augment=none", "augment=light"]


def test_report_shows_the_seed_table_only_when_a_recipe_repeats(seed_runs, runs, tmp_path):
    path, _ = write_report(seed_runs, tmp_path / "seeds.html")
    page = path.read_text()
    assert "<h2>Seeds</h2>" in page and "\u00b1" in page
    path, _ = write_report(runs, tmp_path / "no-seeds.html")
    assert "<h2>Seeds</h2>" not in path.read_text()
    res = CliRunner().invoke(app, ["report", *map(str, seed_runs), "--out",
                                   str(tmp_path / "cli.html")])
    assert res.exit_code == 0, res.output
    assert "over seeds" in res.output and "3 runs" in res.output


def test_cli_report_json_gives_each_recipes_statistics(seed_runs, tmp_path):
    res = CliRunner().invoke(app, ["report", *map(str, seed_runs), "--out",
                                   str(tmp_path / "j.html"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert [r["run"] for r in data["runs"]] == ["alpha", "alpha-s1", "alpha-old", "beta"]
    alpha = data["recipes"][0]
    assert alpha["runs"] == ["alpha", "alpha-s1", "alpha-old"] and alpha["seeds"] == [0, 1, 7]
    lasts = [r["last_val_acc"] for r in data["runs"][:3]]
    assert alpha["last_val_acc"]["mean"] == pytest.approx(sum(lasts) / 3)
    assert data["recipes"][1]["last_val_acc"]["n"] == 1


def test_recipes_follow_the_training_configs_runtime_split(runs, tmp_path):
    """Which options are the recipe is training.config's to say: runs that differ only in
    runtime options (RUNTIME_FIELDS, what --resume takes from the caller) are one recipe, and
    one that differs in eval_batch_size (a Recipe field) is another."""
    from ferkit.evaluation.report import seed_groups
    from ferkit.training.config import RUNTIME_FIELDS

    elsewhere = _copy_run(runs[0], tmp_path / "elsewhere", seed=3, device="cuda", compile=True,
                          data="other/fer2013.zip", dist_timeout=60.0, threads=4)
    assert {"device", "compile", "data", "dist_timeout"} <= set(RUNTIME_FIELDS)
    other_eval = _copy_run(runs[0], tmp_path / "eval-batch", eval_batch_size=64)
    groups = seed_groups([load_run(runs[0]), load_run(elsewhere), load_run(other_eval)])
    assert [[r.label for r in g.runs] for g in groups] == [["alpha", "elsewhere"],
                                                           ["eval-batch"]]
    assert [g.label for g in groups] == ["eval_batch_size=0", "eval_batch_size=64"]
