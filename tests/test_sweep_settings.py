"""ferkit sweep: what each trial trains with. An option given on the command line and also varied
in [params] is refused (Optuna would record one value while training used the other), a CLI
default does not override the space's [train] table, and a worker joins a study only with
training settings that match the study's in full. Training is faked: these are about settings.
"""

from __future__ import annotations

import types

import pytest

optuna = pytest.importorskip("optuna")

from test_sweep_helpers import tiny_grid_space, tiny_space  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from ferkit.cli.app import app  # noqa: E402
from ferkit.sweeps.space import load_space  # noqa: E402
from ferkit.sweeps.storage import SweepError  # noqa: E402
from ferkit.sweeps.study import SweepOptions  # noqa: E402
from ferkit.sweeps.worker import run_sweep  # noqa: E402

DATA = object()  # a dataset the fake train never reads


@pytest.fixture
def trained(monkeypatch):
    """The TrainConfig of every trial, with ferkit.training.trainer.train faked out."""
    configs = []

    def fake_train(config, dataset=None, on_epoch=None, on_start=None):
        configs.append(config)
        return types.SimpleNamespace(best_val_accuracy=0.5, best_epoch=1, history=[None],
                                     wall_seconds=0.01, train_seconds=0.01)

    monkeypatch.setattr("ferkit.training.trainer.train", fake_train)
    monkeypatch.setattr("ferkit.data.load_dataset", lambda path: DATA)
    return configs


def _epochs_space(tmp_path, train_extra: str = ""):
    """A 2-cell grid over epochs (a training option), with extra [train] lines."""
    path = tiny_space(tmp_path, 'sampler = "grid"', "[params]\nepochs = [1, 2]")
    if train_extra:
        path.write_text(path.read_text().replace("[train]\n", f"[train]\n{train_extra}\n", 1))
    return path


def _sweep(tmp_path, *args: str):
    return CliRunner().invoke(app, ["sweep", "--data", "x.csv", "--storage",
                                    str(tmp_path / "s.db"), "--runs", str(tmp_path / "runs"),
                                    *args])


def test_a_cli_option_the_space_varies_is_refused_before_any_trial(tmp_path, trained):
    space = _epochs_space(tmp_path)
    res = _sweep(tmp_path, "--space", str(space), "--epochs", "5")
    assert res.exit_code != 0
    message = str(res.exception)
    assert f"--epochs is also a [params] entry of {space}" in message and "drop one" in message
    assert trained == []  # nothing trained with 5 epochs while Optuna recorded 1 and 2


@pytest.mark.parametrize("option,flag,swept", [("batch_size", "--batch-size", "[32, 64]"),
                                               ("seed", "--seed", "[1, 2]"),
                                               ("limit", "--limit", "[10, 20]")])
def test_each_shared_training_option_is_refused_where_it_is_swept(tmp_path, trained, option,
                                                                  flag, swept):
    space = load_space(tiny_space(tmp_path, 'sampler = "grid"', f"[params]\n{option} = {swept}"))
    options = SweepOptions(storage=f"sqlite:///{tmp_path / 's.db'}", runs=str(tmp_path),
                           **{option: 3})
    with pytest.raises(SweepError, match=rf"{flag} is also a \[params\] entry of .*tiny.toml"):
        run_sweep(space, options, dataset=DATA, say=lambda s: None)
    assert trained == []


def test_what_optuna_records_is_what_trains(tmp_path, trained):
    space = load_space(_epochs_space(tmp_path))
    url = f"sqlite:///{tmp_path / 's.db'}"
    run_sweep(space, SweepOptions(storage=url, runs=str(tmp_path)), dataset=DATA,
              say=lambda s: None)
    trials = optuna.load_study(study_name="tiny", storage=url).get_trials()
    assert sorted(c.epochs for c in trained) == sorted(t.params["epochs"] for t in trials)


def test_the_cli_device_default_leaves_the_space_device(tmp_path, trained):
    space = tiny_grid_space(tmp_path, stages=(1,))
    space.write_text(space.read_text().replace("[train]\n", '[train]\ndevice = "cpu"\n', 1))
    res = _sweep(tmp_path, "--space", str(space))
    assert res.exit_code == 0, res.output
    assert [c.device for c in trained] == ["cpu"]  # not --device's default, auto
    res = _sweep(tmp_path, "--space", str(space), "--study", "given", "--device", "cuda:1")
    assert res.exit_code == 0, res.output
    assert trained[-1].device == "cuda:1"  # given: it replaces the space's


def test_joining_with_an_option_the_creator_left_to_the_default_is_refused(tmp_path, trained):
    """The creator gave no --epochs (the study trains ferkit train's default, 30); a joiner
    with --epochs 5 would train its trials on another budget."""
    space = load_space(tiny_grid_space(tmp_path, stages=(1, 2)))
    url = f"sqlite:///{tmp_path / 's.db'}"
    run_sweep(space, SweepOptions(storage=url, runs=str(tmp_path), trials=1), dataset=DATA,
              say=lambda s: None)
    with pytest.raises(SweepError, match=r"runs with other options: epochs=5 \(study: 30\)"):
        run_sweep(None, SweepOptions(storage=url, study="tiny", epochs=5), dataset=DATA,
                  say=lambda s: None)
    # the same settings, or none (the study's are used), join it
    for options in (SweepOptions(epochs=30), SweepOptions(), SweepOptions(device="cpu")):
        run_sweep(None, SweepOptions(**{**vars(options), "storage": url, "study": "tiny",
                                        "runs": str(tmp_path)}), dataset=DATA,
                  say=lambda s: None)
    assert {c.epochs for c in trained} == {30}


def test_joining_is_compared_on_the_space_train_table_too(tmp_path, trained):
    """The creator set --epochs; the joiner's --batch-size differs from the space's [train]
    batch_size (32), a key the creator never gave: refused, naming it."""
    space = load_space(tiny_grid_space(tmp_path, stages=(1, 2)))
    url = f"sqlite:///{tmp_path / 's.db'}"
    run_sweep(space, SweepOptions(storage=url, runs=str(tmp_path), epochs=2, trials=1),
              dataset=DATA, say=lambda s: None)
    with pytest.raises(SweepError, match=r"batch_size=64 \(study: 32\), epochs=3 \(study: 2\)"):
        run_sweep(space, SweepOptions(storage=url, epochs=3, batch_size=64), dataset=DATA,
                  say=lambda s: None)
    run_sweep(space, SweepOptions(storage=url, runs=str(tmp_path), batch_size=32),
              dataset=DATA, say=lambda s: None)
    assert {(c.epochs, c.batch_size) for c in trained} == {(2, 32)}
