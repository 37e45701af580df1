"""ferkit sweep: trials stored with their user attrs, budgets, pruning, grid cells exactly once
across worker processes, and the sweep report (table, plots, JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from test_sweep_helpers import face_dataset, tiny_grid_space  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from ferkit.cli.app import app  # noqa: E402
from ferkit.models.predictor import Predictor  # noqa: E402
from ferkit.sweeps import report as sr  # noqa: E402
from ferkit.sweeps.space import load_space, parse_space  # noqa: E402
from ferkit.sweeps.storage import SweepError, open_storage  # noqa: E402
from ferkit.sweeps.study import SweepOptions, claim_trial, create_or_join_study  # noqa: E402
from ferkit.sweeps.worker import run_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ATTRS = ("epochs", "wall_seconds", "train_loss", "train_acc", "val_loss", "val_acc", "run_dir")


@pytest.fixture(scope="module")
def dataset():
    return face_dataset()


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory, dataset):
    """A 2-cell grid sweep, 1 epoch per trial, run in-process."""
    tmp = tmp_path_factory.mktemp("grid")
    space = load_space(tiny_grid_space(tmp))
    url = f"sqlite:///{tmp / 'sweeps.db'}"
    lines: list[str] = []
    options = SweepOptions(epochs=1, device="cpu", storage=url, runs=str(tmp / "runs"))
    summary = run_sweep(space, options, dataset=dataset, say=lines.append)
    return tmp, url, summary, lines


def test_grid_sweep_stores_every_trial_with_user_attrs(grid_sweep):
    tmp, url, summary, lines = grid_sweep
    assert summary.n_trials == summary.n_complete == 2 and summary.n_failed == 0
    study = optuna.load_study(study_name="tiny", storage=url)
    trials = study.get_trials()
    assert sorted(t.params["model.stages"] for t in trials) == [1, 2]
    for t in trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        for key in ATTRS:
            assert key in t.user_attrs, key
        assert t.user_attrs["epochs"] == 1
        assert t.value == pytest.approx(t.user_attrs["val_acc"])
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == tmp / "runs" / "tiny" / f"trial-{t.number:04d}"
        assert (run_dir / "best.pt").exists() and (run_dir / "metrics.jsonl").exists()
        config = json.loads((run_dir / "config.json").read_text())
        assert config["model_kwargs"]["stages"] == t.params["model.stages"]
        # the arch kwargs reach the checkpoint, so the trial's model loads anywhere
        predictor = Predictor.load(run_dir, device="cpu")
        assert predictor.arch == "configurable-cnn"
    assert any("best val acc" in line for line in lines)


def test_finished_grid_runs_nothing_more(grid_sweep, dataset):
    _, url, _, _ = grid_sweep
    space = load_space(Path(grid_sweep[0]) / "tiny.toml")
    options = SweepOptions(epochs=1, device="cpu", storage=url, runs=str(grid_sweep[0]))
    summary = run_sweep(space, options, dataset=dataset, say=lambda s: None)
    assert summary.n_trials == 2


def test_joining_with_another_space_or_options_is_refused(grid_sweep, dataset, tmp_path):
    tmp, url, _, _ = grid_sweep
    other = load_space(tiny_grid_space(tmp_path, stages=(1, 3)))
    with pytest.raises(SweepError, match="another search space"):
        run_sweep(other, SweepOptions(epochs=1, storage=url), dataset=dataset)
    same = load_space(tmp / "tiny.toml")
    with pytest.raises(SweepError, match="epochs=3 .study: 1."):
        run_sweep(same, SweepOptions(epochs=3, storage=url), dataset=dataset)


def test_tpe_budget_and_pruning(tmp_path, dataset, monkeypatch):
    # a pruner that stops every trial after its first epoch
    monkeypatch.setattr("ferkit.sweeps.study._pruner",
                        lambda space: optuna.pruners.ThresholdPruner(lower=1.1))
    space = parse_space({
        "sampler": "tpe", "pruner": "median", "trials": 2,
        "train": {"model": "configurable-cnn", "batch_size": 32, "augment": "none"},
        "model": {"filters": 4, "fc_units": 16, "stages": 2},
        "params": {"lr": {"type": "log", "low": 1e-3, "high": 1e-1}},
    }, source="test", default_name="prune")
    url = f"sqlite:///{tmp_path / 's.db'}"
    summary = run_sweep(space, SweepOptions(epochs=3, device="cpu", storage=url,
                                                  runs=str(tmp_path)), dataset=dataset,
                           say=lambda s: None)
    assert summary.n_trials == 2 and summary.n_pruned == 2
    for t in optuna.load_study(study_name="prune", storage=url).trials:
        assert t.user_attrs["epochs"] == 1  # stopped after the first of 3 epochs
        assert t.intermediate_values.keys() == {1}


def test_a_failed_grid_cell_is_queued_again(tmp_path):
    """claim_trial: trial k gets cell k; a failed cell is claimed again, nothing else twice."""
    space = load_space(tiny_grid_space(tmp_path, stages=(1, 2, 3)))
    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = open_storage(url)
    study, space, _, _ = create_or_join_study(space, SweepOptions(storage=url), storage)
    ts = optuna.trial.TrialState
    claimed = [claim_trial(study, space, 3, set()) for _ in range(3)]
    assert sorted(v["model.stages"] for _, v in claimed) == [1, 2, 3]
    assert claim_trial(study, space, 3, set()) is None  # budget: 3 running trials
    (t0, v0), (t1, _), (t2, _) = claimed
    study.tell(t0, state=ts.FAIL)
    study.tell(t1, 0.5)
    study.tell(t2, 0.6)
    retry, values = claim_trial(study, space, 3, set())
    assert values == v0 and retry.number == 3
    study.tell(retry, 0.4)
    assert claim_trial(study, space, 3, set()) is None
    done = [t.params["model.stages"] for t in study.get_trials() if t.state == ts.COMPLETE]
    assert sorted(done) == [1, 2, 3]


_RACER = textwrap.dedent("""
    import sys, time
    from ferkit.sweeps.space import load_space
    from ferkit.sweeps.storage import open_storage, study_lock
    from ferkit.sweeps.study import SweepOptions, claim_trial, create_or_join_study
    space = load_space(sys.argv[1])
    options = SweepOptions(storage=sys.argv[2], study="race")
    storage = open_storage(options.storage)
    study, space, attr, _ = create_or_join_study(space, options, storage)
    n = 0
    while True:
        with study_lock(storage, options.storage, "race"):
            claimed = claim_trial(study, space, attr["budget"], set())
        if claimed is None:
            break
        trial, values = claimed
        time.sleep(0.02)
        study.tell(trial, float(values["model.stages"]))
        n += 1
    print(n)
""")


def test_two_processes_share_one_sqlite_grid_study_without_losing_or_duplicating(tmp_path):
    """Two worker processes race for the cells of a 5-cell grid on one SQLite file."""
    space_file = tiny_grid_space(tmp_path, stages=(1, 2, 3, 4, 5))
    url = f"sqlite:///{tmp_path / 'race.db'}"
    script = tmp_path / "racer.py"
    script.write_text(_RACER)
    procs = [subprocess.Popen([sys.executable, str(script), str(space_file), url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    ran = [int(out.split()[-1]) for out, _ in outs]
    assert sum(ran) == 5
    trials = optuna.load_study(study_name="race", storage=url).get_trials()
    assert len(trials) == 5
    assert sorted(t.params["model.stages"] for t in trials) == [1, 2, 3, 4, 5]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_cli_workers_run_each_cell_exactly_once(tmp_path, monkeypatch):
    """`ferkit sweep --workers 2`: two spawned processes train a 3-cell grid from a CSV."""
    from synth import make_csv_dataset

    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    csv = make_csv_dataset(tmp_path, n_per_class=6)
    space_file = tiny_grid_space(tmp_path, stages=(1, 2, 3))
    result = subprocess.run(
        [sys.executable, "-m", "ferkit", "sweep", "--space", str(space_file), "--data", str(csv),
         "--epochs", "1", "--device", "cpu", "--storage", "w.db", "--workers", "2"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "3 complete, 0 pruned, 0 failed of 3 trials" in result.stdout
    trials = optuna.load_study(study_name="tiny", storage="sqlite:///w.db").get_trials()
    assert sorted(t.params["model.stages"] for t in trials) == [1, 2, 3]
    assert len({t.user_attrs["run_dir"] for t in trials}) == 3


# ---------------------------------------------------------------------------------------------
# ferkit sweep report


def test_report_table_json_and_plots(grid_sweep, tmp_path):
    _, url, _, _ = grid_sweep
    study = sr.load_study(url)  # the latest (only) study
    report = sr.report_dict(study, url)
    assert report["study"] == "tiny" and report["params"] == ["model.stages"]
    assert [r["trial"] for r in report["trials"]] == [0, 1]
    header, cells = sr.table_rows(report)
    assert header[:3] == ["trial", "state", "model.stages"]
    assert {"epochs", "time (s)", "train loss", "train acc", "val loss", "val acc"} <= set(header)
    assert len(cells) == 2
    md = sr.markdown_table(report).splitlines()
    assert md[0].startswith("| trial | state | model.stages |")
    assert md[1].startswith("| ---: | --- |")
    assert len(md) == 4 and all(line.count("|") == len(header) + 1 for line in md)
    written = sr.write_report(study, report, tmp_path / "rep")
    for key in ("params", "history", "json"):
        assert written[key].exists() and written[key].stat().st_size > 0
    assert written["params"].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(written["json"].read_text())["best"]["value"] == report["best"]["value"]


def test_cli_sweep_report_prints_one_row_per_trial_and_json(grid_sweep, tmp_path):
    _, url, _, _ = grid_sweep
    runner = CliRunner()
    res = runner.invoke(app, ["sweep", "report", "--storage", url, "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert len(rows) == 2 and all("complete" in r for r in rows)
    assert (tmp_path / "params.png").exists() and (tmp_path / "history.png").exists()
    res = runner.invoke(app, ["sweep", "report", "tiny", "--storage", url, "--json",
                              "--out", str(tmp_path / "j")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [r["params"]["model.stages"] for r in data["trials"]] in ([1, 2], [2, 1])
    assert all(r["epochs"] == 1 and r["run_dir"] for r in data["trials"])


def test_report_errors(grid_sweep, tmp_path):
    _, url, _, _ = grid_sweep
    with pytest.raises(SweepError, match="no study 'nope'.*tiny"):
        sr.load_study(url, "nope")
    with pytest.raises(SweepError, match="no such database file"):
        sr.load_study(f"sqlite:///{tmp_path / 'none.db'}")


def test_report_handles_pruned_failed_and_categorical_trials(tmp_path):
    """Trials made by hand (no training): log, categorical and pruned/failed rows all plot."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    study = optuna.create_study(study_name="hand", storage=url, direction="maximize")
    dists = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
             "augment": optuna.distributions.CategoricalDistribution(["light", "strong"])}
    ts = optuna.trial.TrialState
    for i, (state, value) in enumerate([(ts.COMPLETE, 0.5), (ts.PRUNED, None),
                                        (ts.COMPLETE, 0.6), (ts.FAIL, None)]):
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value, params={"lr": 10 ** -(i + 1), "augment": "light"},
            distributions=dists, intermediate_values={1: 0.3} if state == ts.PRUNED else {},
            user_attrs={"epochs": 1, "val_acc": value or 0.3, "wall_seconds": 1.5}))
    st = sr.load_study(url, "hand")
    report = sr.report_dict(st, url)
    assert report["best"]["trial"] == 2
    assert [r["state"] for r in report["trials"]] == ["complete", "pruned", "complete", "fail"]
    written = sr.write_report(st, report, tmp_path / "out")
    assert written["params"].exists() and written["history"].exists()
    assert "pruned" in sr.plain_table(report)


def test_cli_sweep_errors_are_one_line(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["sweep", "--preset", "nope", "--data", "x"])
    assert res.exit_code != 0
    assert "unknown sweep preset 'nope'" in str(res.exception)
    res = runner.invoke(app, ["sweep", "presets"])
    assert res.exit_code == 0 and "conv-stages" in res.output and "tune" in res.output
