"""One source per training option: TrainConfig's fields make `ferkit train`'s options, the
override path checks names and types for the CLI, sweeps and benches, old configs still load."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import ferkit.cli.train as cli_train
from ferkit.cli.app import app
from ferkit.training.config import (
    PANELS,
    RUNTIME_FIELDS,
    ConfigError,
    Recipe,
    RuntimeOptions,
    TrainConfig,
    flag_of,
    option,
    parse_overrides,
)

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _help(app_: typer.Typer, *args: str) -> str:
    result = runner.invoke(app_, [*args, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


def test_help_lists_every_field_in_its_panel_within_80_columns():
    text = _help(app, "train")
    assert "Examples" in text and "ferkit train --resume --out" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    panels = {p: text.index(f"─ {p} ") for p in PANELS}
    assert list(panels.values()) == sorted(panels.values())  # panels in PANELS order
    for f in dataclasses.fields(TrainConfig):
        flag, panel = flag_of(f), f.metadata["panel"]
        after = [p for p in PANELS if panels[p] > panels[panel]]
        end = panels[after[0]] if after else len(text)
        assert re.search(rf"│ {re.escape(flag)}\s", text[panels[panel]:end]), (flag, panel)
    for own in ("--config", "--json", "--nproc"):
        assert own in text


def test_every_field_has_help_and_a_panel_and_runtime_is_its_own_dataclass():
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["help"].strip() and f.metadata["panel"] in PANELS, f.name
    runtime = {f.name for f in dataclasses.fields(RuntimeOptions)}
    recipe = {f.name for f in dataclasses.fields(Recipe)}
    assert runtime == set(RUNTIME_FIELDS) and not runtime & recipe
    assert {f.name for f in dataclasses.fields(TrainConfig)} == runtime | recipe
    assert "num_workers" not in runtime | recipe
    c = TrainConfig(device="cpu", threads=2, lr=0.1)
    assert c.runtime() == RuntimeOptions(device="cpu", threads=2)


@dataclasses.dataclass
class _Extended(TrainConfig):
    warp_factor: float = option(0.5, panel="Optimisation", bounds=(0, 1),
                                help="A brand-new option, only declared as a field.")
    turbo: bool = option(False, panel="Run", help="Another one, a bool.")


def test_a_field_added_to_the_dataclass_appears_on_the_cli(monkeypatch):
    extended = typer.Typer()
    extended.command("train", help=cli_train.HELP)(cli_train.make_train_command(_Extended))
    text = _help(extended)
    assert "--warp-factor" in text and "brand-new option" in text
    assert "--turbo" in text and "--no-turbo" in text
    start = text.index("─ Optimisation ")
    assert start < text.index("│ --warp-factor", start) < text.index("─ Distillation ")
    seen = {}
    monkeypatch.setattr(cli_train, "_run", lambda config, as_json: seen.update(c=config))
    result = runner.invoke(extended, ["--data", "x.csv", "--warp-factor", "0.25", "--turbo",
                                      "--epochs", "3"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    config = seen["c"]
    assert isinstance(config, _Extended) and config.warp_factor == 0.25 and config.turbo
    assert config.epochs == 3 and config.data == "x.csv"
    with pytest.raises(ConfigError, match=r"--warp-factor must be in \[0, 1\]"):
        config.override({"warp_factor": 2}).validated()


def test_cli_values_reach_the_config_unchanged(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli_train, "_run", lambda config, as_json: seen.update(c=config))
    args = ["train", "-d", "f.zip", "-m", "cnn4", "--model-arg", "dropout=0.3", "-e", "5",
            "-b", "64", "--lr", "0.01", "-a", "light", "--no-channels-last", "--compile",
            "--sync-bn", "--holdout", "0.2", "-o", "runs/x", "--no-amp"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    c = seen["c"]
    assert (c.data, c.model, c.model_kwargs, c.epochs, c.batch_size, c.lr, c.augment) == (
        "f.zip", "cnn4", {"dropout": 0.3}, 5, 64, 0.01, "light")
    assert (c.channels_last, c.compile, c.sync_bn, c.holdout, c.out, c.amp) == (
        False, True, True, 0.2, "runs/x", "off")
    # the rest keep the dataclass defaults
    defaults = TrainConfig()
    assert c.momentum == defaults.momentum and c.dist_timeout == defaults.dist_timeout


def test_type_errors_name_the_option():
    with pytest.raises(ConfigError, match=r"--epochs 'many'.*: expected an integer"):
        TrainConfig().override({"epochs": "many"}, "test")
    with pytest.raises(ConfigError, match=r"--ema \[1\]: expected a number"):
        TrainConfig().override({"ema": [1]})
    with pytest.raises(ConfigError, match=r"--compile 'maybe'.*true or false"):
        TrainConfig().override(parse_overrides(["compile=maybe"]))
    with pytest.raises(ConfigError, match=r"--model-arg 3: expected a table"):
        TrainConfig().override({"model_kwargs": 3})
    with pytest.raises(ConfigError, match="unknown training option 'bogus'"):
        TrainConfig().override({"bogus": 1})
    with pytest.raises(ConfigError, match="--batch-size 'x'"):
        TrainConfig(batch_size="x").validated()
    ok = TrainConfig().override(parse_overrides(["ema=0.999", "holdout=none", "compile=true",
                                                 "epochs=3", "lr=1e-3", "teacher=runs/t"]))
    assert (ok.ema, ok.holdout, ok.compile, ok.epochs, ok.lr, ok.teacher) == (
        0.999, None, True, 3, 1e-3, "runs/t")
    result = runner.invoke(app, ["train", "--data", "x", "--epochs", "many"])
    assert result.exit_code == 2 and "--epochs" in result.output



def _bad_value(f: dataclasses.Field):
    """A value the field's checks refuse (None where it has none)."""
    m = f.metadata
    if m["choices"]:
        return "not-a-choice"
    if m["bounds"]:
        return m["bounds"][1] + 1 if m["bounds"][1] != math.inf else -1
    if m["positive"] or m["non_negative"]:
        return -1
    return None


def test_value_errors_name_every_option_as_its_flag():
    """Every check's message names the option as typed (--distill-targets, not
    --distill_targets)."""
    checked = [f for f in dataclasses.fields(TrainConfig) if _bad_value(f) is not None]
    assert "distill_targets" in {f.name for f in checked}
    for f in checked:
        with pytest.raises(ConfigError) as exc:
            TrainConfig(**{f.name: _bad_value(f)}).validated()
        assert str(exc.value).startswith(flag_of(f) + " "), (f.name, str(exc.value))
    with pytest.raises(ConfigError, match=r"^--distill-targets 'cached': expected one of"):
        TrainConfig(distill_targets="cached").validated()
    with pytest.raises(ConfigError, match=r"^--ema must be in"):
        TrainConfig(ema=2.0).validated()

def test_bench_set_goes_through_the_same_check():
    cmd = [sys.executable, str(ROOT / "bench" / "time_to_accuracy.py"), "--data", "none.zip",
           "--set", "ema=fast"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "--ema 'fast' (--set): expected a number" in result.stderr


def test_sweep_train_tables_are_type_checked():
    from ferkit.sweeps.space import SearchSpaceError, parse_space

    base = {"params": {"lr": [0.01, 0.1]}}
    with pytest.raises(SearchSpaceError, match=r"train.epochs: --epochs 'ten'"):
        parse_space({**base, "train": {"epochs": "ten"}}, source="s.toml")
    with pytest.raises(SearchSpaceError, match=r"params.batch_size: --batch-size 1.5"):
        parse_space({"params": {"batch_size": [16, 1.5]}}, source="s.toml")


def test_old_configs_with_retired_options_load_with_a_note(tmp_path, caplog, monkeypatch):
    old = {**TrainConfig(data="d.csv", epochs=4).to_dict(), "num_workers": 2,
           "execution": {"device": "cpu"}}
    with caplog.at_level(logging.INFO, logger="ferkit.training.config"):
        c = TrainConfig.from_dict(old)  # strict: still loads
    assert c.epochs == 4 and "num_workers" in caplog.text
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    seen = {}
    monkeypatch.setattr(cli_train, "_run", lambda config, as_json: seen.update(c=config))
    result = runner.invoke(app, ["train", "--config", str(path), "--seed", "7"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert seen["c"].epochs == 4 and seen["c"].seed == 7 and seen["c"].data == "d.csv"

