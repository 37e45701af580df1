"""Sweep search spaces: TOML parsing, errors that name the file and key, presets, examples."""

import re
from pathlib import Path

import pytest
import torch

from ferkit.models import create_model
from ferkit.sweeps.space import (
    PRESETS,
    Param,
    SearchSpaceError,
    load_space,
    parse_space,
    preset,
    resolve_space,
)

ROOT = Path(__file__).resolve().parents[1]

FULL = """
description = "every type"
sampler = "tpe"
pruner = "median"
trials = 12
seed = 3

[train]
optimizer = "adamw"
model = "configurable-cnn"

[model]
stages = 3

[params]
lr = { type = "log", low = 1e-4, high = 1e-2 }
weight_decay = { type = "float", low = 0.0, high = 0.1, log = false }
label_smoothing = { type = "float", low = 0.0, high = 0.2, step = 0.05 }
batch_size = { type = "int", low = 32, high = 128, step = 32 }
augment = ["light", "strong"]
ema = { type = "categorical", choices = [0.0, 0.999] }

[params.model]
fc_units = { type = "int", low = 64, high = 1024, log = true }
"""


def write(tmp_path, text, name="space.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_parameter_type_parses(tmp_path):
    space = load_space(write(tmp_path, FULL))
    by = {p.name: p for p in space.params}
    assert space.name == "space" and space.sampler == "tpe" and space.pruner == "median"
    assert space.trials == 12 and space.budget == 12 and space.seed == 3
    assert by["lr"] == Param("lr", "float", low=1e-4, high=1e-2, log=True)
    assert by["weight_decay"].type == "float" and not by["weight_decay"].log
    assert by["batch_size"] == Param("batch_size", "int", low=32, high=128, step=32)
    assert by["batch_size"].grid_values() == [32, 64, 96, 128]
    assert by["label_smoothing"].grid_values() == [0.0, 0.05, 0.1, 0.15, 0.2]
    assert by["augment"].choices == ("light", "strong")
    assert by["ema"].choices == (0.0, 0.999)
    assert by["model.fc_units"].is_model_kwarg and by["model.fc_units"].key == "fc_units"
    assert by["model.fc_units"].log and by["model.fc_units"].type == "int"
    # a round trip through the dict stored with a study gives the same space
    again = parse_space(space.to_dict(), source="again")
    assert again.to_dict() == space.to_dict()


def test_suggest_and_apply_split_train_options_from_model_kwargs(tmp_path):
    optuna = pytest.importorskip("optuna")
    space = load_space(write(tmp_path, FULL))
    trial = optuna.trial.FixedTrial({"lr": 1e-3, "weight_decay": 0.01, "label_smoothing": 0.1,
                                     "batch_size": 64, "augment": "light", "ema": 0.999,
                                     "model.fc_units": 256})
    values = space.suggest(trial)
    train, model = space.apply(values)
    assert train == {"optimizer": "adamw", "model": "configurable-cnn", "lr": 1e-3,
                     "weight_decay": 0.01, "label_smoothing": 0.1, "batch_size": 64,
                     "augment": "light", "ema": 0.999}
    assert model == {"stages": 3, "fc_units": 256}


@pytest.mark.parametrize("text, key, words", [
    ('bogus = 1\n[params]\nlr = [0.1]', "bogus", "unknown key"),
    ('sampler = "anneal"\n[params]\nlr = [0.1]', "sampler", "not one of"),
    ('trials = 0\n[params]\nlr = [0.1]', "trials", "positive integer"),
    ('[params]\nlr = { type = "float", high = 1.0 }', "params.lr.low", "missing"),
    ('[params]\nlr = { type = "float", low = "a", high = 1.0 }', "params.lr.low", "number"),
    ('[params]\nlr = { type = "float", low = 2.0, high = 1.0 }', "params.lr", "greater than"),
    ('[params]\nlr = { type = "log", low = 0.0, high = 1.0 }', "params.lr.low", "> 0"),
    ('[params]\nlr = { type = "decimal", low = 0, high = 1 }', "params.lr.type", "not one of"),
    ('[params]\nlr = { type = "float", low = 0, high = 1, fancy = 2 }', "params.lr.fancy",
     "unknown key"),
    ('[params]\nlr = { type = "float", low = 0.1, high = 1, log = true, step = 0.1 }',
     "params.lr.step", "log scale"),
    ('[params]\nbatch_size = { type = "int", low = 1.5, high = 8 }', "params.batch_size.low",
     "integer"),
    ('[params]\naugment = { type = "categorical", choices = [] }', "params.augment.choices",
     "non-empty"),
    ('[params]\naugment = ["a", "a"]', "params.augment.choices", "twice"),
    ('[params]\nnot_an_option = [1, 2]', "params.not_an_option", "not a training option"),
    ('[train]\nwarp_speed = 9\n[params]\nlr = [0.1]', "train.warp_speed", "not a training"),
    ('[params]\n', "params", "no parameters"),
    ('sampler = "grid"\n[params]\nlr = { type = "log", low = 1e-4, high = 1e-2 }', "params.lr",
     "finite set"),
    ('sampler = "grid"\npruner = "median"\n[params]\nlr = [0.1, 0.2]', "pruner", "grid"),
])
def test_errors_name_the_file_and_the_key(tmp_path, text, key, words):
    path = write(tmp_path, text, "bad.toml")
    with pytest.raises(SearchSpaceError) as err:
        load_space(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key}:"), msg
    assert words in msg


def test_toml_syntax_error_and_missing_file(tmp_path):
    path = write(tmp_path, "[params\nlr = 1", "broken.toml")
    with pytest.raises(SearchSpaceError, match=r"broken\.toml: invalid TOML"):
        load_space(path)
    with pytest.raises(SearchSpaceError, match="no such search space file"):
        load_space(tmp_path / "absent.toml")


def test_exactly_one_of_preset_and_space(tmp_path):
    with pytest.raises(SearchSpaceError, match="exactly one"):
        resolve_space(None, None)
    with pytest.raises(SearchSpaceError, match="exactly one"):
        resolve_space("tune", tmp_path / "x.toml")
    with pytest.raises(SearchSpaceError, match="unknown sweep preset 'nope'.*conv-stages"):
        resolve_space("nope", None)


def test_presets_expand_to_the_source_projects_grid():
    stages = preset("conv-stages")
    assert stages.is_grid and stages.budget == 4
    assert [c["model.stages"] for c in stages.grid_cells()] == [2, 3, 4, 5]
    fc = preset("fc-layers")
    assert [c["model.fc_layers"] for c in fc.grid_cells()] == [1, 2, 3, 4]
    widths = preset("widths")
    cells = widths.grid_cells()
    assert len(cells) == widths.budget == 9
    assert {(c["model.filters"], c["model.fc_units"]) for c in cells} == {
        (f, u) for f in (16, 32, 64) for u in (256, 512, 1024)}
    tune = preset("tune")
    assert tune.sampler == "tpe" and tune.pruner == "median" and tune.budget == 30
    assert {p.name for p in tune.params} == {"lr", "weight_decay", "augment", "label_smoothing",
                                             "model.filters"}
    for name in PRESETS:
        assert preset(name).train["model"] == "configurable-cnn"


@pytest.mark.parametrize("name", ["conv-stages", "fc-layers", "widths"])
def test_every_grid_cell_builds_a_model(name):
    space = preset(name)
    x = torch.zeros(2, 1, 48, 48)
    for cell in space.grid_cells():
        _, kwargs = space.apply(cell)
        kwargs = {**kwargs, "filters": min(kwargs.get("filters", 64), 8), "fc_units": 8}
        assert create_model("configurable-cnn", **kwargs).eval()(x).shape == (2, 7)


def test_presets_are_the_packaged_files_and_the_examples_are_copies_of_them():
    packaged = ROOT / "src" / "ferkit" / "sweeps" / "presets"
    assert tuple(sorted(f.stem for f in packaged.glob("*.toml"))) == PRESETS
    files = sorted((ROOT / "sweeps").glob("*.toml"))
    assert {f.stem for f in files} >= set(PRESETS)
    for f in files:
        space = load_space(f)  # every example parses (transfer.toml is an example only)
        if f.stem in PRESETS:
            # README commands use sweeps/NAME.toml: the same bytes as --preset NAME
            assert f.read_bytes() == (packaged / f.name).read_bytes(), f
            assert space.to_dict() == preset(f.stem).to_dict(), f


def test_presets_ship_as_package_data_and_sweeps_modules_import_downwards_only():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"sweeps/presets/*.toml"' in pyproject  # else a wheel install has no presets
    order = ["space", "storage", "study", "worker", "report"]
    for i, name in enumerate(order):
        text = (ROOT / "src" / "ferkit" / "sweeps" / f"{name}.py").read_text()
        imported = set(re.findall(r"from ferkit\.sweeps\.(\w+) import", text))
        imported |= set(re.findall(r"from ferkit\.sweeps import (\w+)", text))
        later = set(order[i:])  # itself and the modules after it
        assert not imported & later, (name, imported & later)
