"""Options outside training have one owner each: `ferkit serve`'s settings are ServeConfig's
fields, `ferkit sweep`'s shared options SweepOptions' (the training ones TrainConfig's), and the
detection threshold is the Recognizer's default. The command lines are generated from the
fields, so their defaults and help are the library's; nothing in src/ restates them."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ferkit.cli.app import app
from ferkit.errors import ConfigError
from ferkit.options import default_of, flag_of, option_fields
from ferkit.recognition.sizes import MIN_CONFIDENCE
from ferkit.serving import config as serve_config
from ferkit.serving.config import ServeConfig
from ferkit.sweeps import options as sweep_options
from ferkit.sweeps.options import SweepOptions
from ferkit.training.config import TrainConfig

SRC = Path(__file__).resolve().parents[1] / "src/ferkit"


def _params(*path: str) -> dict[str, typer.core.click.Parameter]:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return {p.name: p for p in command.params}


def _default(func, name: str):
    return inspect.signature(func).parameters[name].default


def test_min_confidence_is_the_recognizers_default_everywhere():
    from ferkit.cli.predict import MIN_CONFIDENCE_OPTION
    from ferkit.recognition.detector import Detector
    from ferkit.recognition.recognizer import Recognizer
    from ferkit.serving.engine import Engine

    assert _default(Recognizer, "min_confidence") == MIN_CONFIDENCE
    for default in (_default(Detector, "min_confidence"), _default(Engine, "min_confidence"),
                    ServeConfig().min_confidence, MIN_CONFIDENCE_OPTION.default,
                    _params("serve")["min_confidence"].default,
                    _params("predict")["min_confidence"].default):
        assert default == MIN_CONFIDENCE


def test_batching_and_limit_defaults_are_serve_configs():
    from ferkit.serving.batching import MicroBatcher
    from ferkit.serving.engine import Engine
    from ferkit.serving.limits import Limits

    config, cli = ServeConfig(), _params("serve")
    for name in ("max_batch", "max_wait_ms", "batching"):
        assert _default(MicroBatcher, name if name != "batching" else "enabled") == \
            getattr(config, name)
        assert _default(Engine, name) == getattr(config, name) == cli[name].default
    assert cli["max_wait_ms"].opts == ["--batch-wait-ms"]
    assert Limits() == Limits.from_config(config)
    assert Limits().max_upload_bytes == int(cli["max_upload_mb"].default * 2**20)


@pytest.mark.parametrize("name,value", [("min_confidence", "0.5"), ("max_batch", "64"),
                                        ("max_wait_ms", "3.0")])
def test_no_module_restates_a_serving_default(name, value):
    """A line that names the setting (or its flag) and spells its default out: only the owner
    (the threshold in recognition/sizes.py, the rest in serving/config.py) has one."""
    flag = flag_of(next(f for f in dataclasses.fields(ServeConfig) if f.name == name))
    owner = {"min_confidence": "recognition/sizes.py"}.get(name, "serving/config.py")
    literal = re.compile(rf"(?<![\w.]){re.escape(value)}(?![\w.])")
    spelled = []
    for path in SRC.rglob("*.py"):
        for line in path.read_text().splitlines():
            named = name in line or flag in line or name.upper() in line
            if named and literal.search(line.split("#")[0]):
                spelled.append(f"{path.relative_to(SRC)}: {line.strip()}")
    assert all(s.startswith(owner) for s in spelled), spelled
    assert len(spelled) == 1, spelled


def test_serve_config_checks_its_fields_and_travels_as_json():
    config = ServeConfig(model="runs/x", max_batch=8, max_wait_ms=25.0, batching=False)
    assert ServeConfig.from_json(config.to_json()) == config
    assert ServeConfig.from_json("") == ServeConfig()
    with pytest.raises(ConfigError, match=r"--max-batch must be in \[1, 4096\], got 0"):
        ServeConfig(max_batch=0)
    with pytest.raises(ConfigError, match="--batch-wait-ms"):
        ServeConfig(max_wait_ms=-1.0)
    with pytest.raises(ConfigError, match="--detect-size 10"):
        ServeConfig(detect_size=10)
    with pytest.raises(ConfigError, match="unknown serve setting"):
        ServeConfig.from_json('{"max_wait": 3}')


def test_sweep_training_options_are_train_configs():
    """Flag, short form, help and checks come from TrainConfig's field; the overrides default
    to None (not given), so a space's [train] value stands unless the option is typed."""
    train = {f.name: f for f in dataclasses.fields(TrainConfig)}
    overrides = set()
    for f in dataclasses.fields(SweepOptions):
        if f.name in train:
            mine, theirs = f.metadata, train[f.name].metadata
            assert flag_of(f) == flag_of(train[f.name])
            assert mine["short"] == theirs["short"]
            assert all(mine[k] == theirs[k] for k in ("choices", "bounds", "positive",
                                                      "non_negative"))
            assert mine["help"].startswith(theirs["help"][:-1]) or f.name == "threads"
        if f.metadata.get("override"):
            overrides.add(f.name)
            assert f.default is None
    assert overrides == {"epochs", "limit", "batch_size", "seed", "device"}
    assert SweepOptions(epochs=3, device="cpu").train_overrides() == {"epochs": 3,
                                                                      "device": "cpu"}
    with pytest.raises(ConfigError, match="--epochs must be positive, got 0"):
        SweepOptions(epochs=0)
    with pytest.raises(ConfigError, match="--workers must be positive, got 0"):
        SweepOptions(workers=0)
    with pytest.raises(ConfigError, match="--threads must be >= 0"):
        SweepOptions(threads=-1)


@pytest.mark.parametrize("command,cls,module", [("serve", ServeConfig, serve_config),
                                                ("sweep", SweepOptions, sweep_options)],
                         ids=["serve", "sweep"])
def test_help_shows_every_option_with_its_help_and_default(command, cls, module):
    """`ferkit serve --help` and `ferkit sweep --help` list each field's flag with its help
    text, and the command's defaults are the dataclass's."""
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert res.exit_code == 0, res.output
    shown = " ".join(res.output.replace("│", " ").split())
    params = _params(command)
    hints = typing.get_type_hints(cls)
    for f in option_fields(cls, module.PANELS):
        assert flag_of(f) in shown, f.name
        assert " ".join(f.metadata["help"].replace("\\[", "[").split()) in shown, f.name
        expected = default_of(f)
        assert params[f.name].default == expected, f.name
        assert params[f.name].help == f.metadata["help"], f.name
        assert f.name in hints
