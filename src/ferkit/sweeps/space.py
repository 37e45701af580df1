"""Sweep search spaces: a small TOML file or a named preset -> the parameters Optuna samples.

A search space file (the presets are such files, in ferkit/sweeps/presets/; sweeps/*.toml in the
repository are copies to start from):

    description = "learning rate and width"   # optional
    sampler = "tpe"        # grid | tpe | random  (grid: every combination exactly once)
    pruner = "median"      # none | median        (stop poor trials early; not with grid)
    trials = 30            # the study's trial budget (grid: defaults to the grid size)
    seed = 0               # sampler seed

    [train]                # fixed TrainConfig options for every trial
    model = "configurable-cnn"
    optimizer = "adamw"

    [model]                # fixed model kwargs (TrainConfig.model_kwargs)
    stages = 4

    [params]               # what the sweep varies: TrainConfig options ...
    lr = { type = "log", low = 1e-4, high = 3e-3 }
    label_smoothing = { type = "float", low = 0.0, high = 0.2 }
    augment = ["light", "default", "strong"]        # a list is a categorical choice

    [params.model]         # ... and model kwargs (trial parameter names "model.<kwarg>")
    filters = { type = "int", low = 32, high = 96, step = 32 }

Parameter types: int (low, high, optional step or log), float (low, high, optional step or log),
log (a float sampled on a log scale), categorical (choices = [...], or just a list).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ferkit.errors import ConfigError, FerkitError
from ferkit.training.config import check_type, field_names

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SAMPLERS = ("grid", "tpe", "random")
PRUNERS = ("none", "median")
PARAM_TYPES = ("int", "float", "log", "categorical")
MODEL_PREFIX = "model."
_TOP_KEYS = ("name", "description", "sampler", "pruner", "trials", "seed", "train", "model",
             "params")
_PARAM_KEYS = {"type", "low", "high", "step", "log", "choices"}
Scalar = str | int | float | bool


class SearchSpaceError(FerkitError, ValueError):
    """A search space file or preset is malformed; the message names the file and key."""


@dataclass(frozen=True)
class Param:
    """One swept parameter. `name` is a TrainConfig field or "model.<kwarg>"."""

    name: str
    type: str  # int | float | categorical ("log" files become float with log=True)
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Scalar, ...] = ()

    @property
    def is_model_kwarg(self) -> bool:
        return self.name.startswith(MODEL_PREFIX)

    @property
    def key(self) -> str:
        """The TrainConfig field or model kwarg this parameter sets."""
        return self.name[len(MODEL_PREFIX):] if self.is_model_kwarg else self.name

    def suggest(self, trial: Any) -> Scalar:
        """Draw this parameter from an optuna Trial."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high),
                                   step=self.step, log=self.log)

    def grid_values(self) -> list[Scalar] | None:
        """Every value, for a grid; None for a continuous range."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.type == "float" and self.step and not self.log:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            return [round(self.low + i * self.step, 12) for i in range(n)]
        return None

    def describe(self) -> str:
        if self.type == "categorical":
            return f"{self.name} in {list(self.choices)}"
        scale = " (log)" if self.log else ""
        step = f" step {self.step:g}" if self.step else ""
        return f"{self.name} {self.type} [{self.low:g}, {self.high:g}]{step}{scale}"


@dataclass(frozen=True)
class SearchSpace:
    """What a sweep samples, and how: sampler, pruner, trial budget, fixed options."""

    name: str
    params: tuple[Param, ...]
    sampler: str = "tpe"
    pruner: str = "none"
    trials: int | None = None
    seed: int = 0
    train: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = ""  # file path or "preset NAME", for messages

    @property
    def is_grid(self) -> bool:
        return self.sampler == "grid"

    def grid(self) -> dict[str, list[Scalar]]:
        """Parameter name -> every value (grid sampler)."""
        out = {}
        for p in self.params:
            values = p.grid_values()
            if values is None:
                raise SearchSpaceError(f"{self.source}: params.{p.name}: sampler = 'grid' needs a "
                                       "finite set of values; give a list, or a step")
            out[p.name] = values
        return out

    def grid_cells(self) -> list[dict[str, Scalar]]:
        """Every combination, in a fixed order (first parameter varies slowest)."""
        grid = self.grid()
        names = list(grid)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]

    @property
    def budget(self) -> int | None:
        """The study's trial budget: `trials`, or for a grid the number of cells."""
        if self.is_grid:
            n = len(self.grid_cells())
            return min(self.trials, n) if self.trials else n
        return self.trials

    def suggest(self, trial: Any) -> dict[str, Scalar]:
        return {p.name: p.suggest(trial) for p in self.params}

    def apply(self, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(TrainConfig overrides, model_kwargs) for one trial: fixed options, then its values."""
        train = dict(self.train)
        model_kwargs = dict(self.model)
        for name, value in values.items():
            if name.startswith(MODEL_PREFIX):
                model_kwargs[name[len(MODEL_PREFIX):]] = value
            else:
                train[name] = value
        return train, model_kwargs

    def with_overrides(self, **changes: Any) -> SearchSpace:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The TOML-shaped dict parse_space reads back (stored with a study)."""
        params: dict[str, Any] = {}
        model_params: dict[str, Any] = {}
        for p in self.params:
            if p.type == "categorical":
                spec: Any = list(p.choices)
            else:
                spec = {"type": p.type, "low": p.low, "high": p.high}
                if p.step is not None:
                    spec["step"] = p.step
                if p.log:
                    spec["log"] = True
            (model_params if p.is_model_kwarg else params)[p.key] = spec
        if model_params:
            params["model"] = model_params
        out = {"name": self.name, "description": self.description, "sampler": self.sampler,
               "pruner": self.pruner, "seed": self.seed, "train": dict(self.train),
               "model": dict(self.model), "params": params}
        if self.trials is not None:
            out["trials"] = self.trials
        return out

    def summary(self) -> str:
        lines = [f"{self.name}: {self.description}".rstrip(": "),
                 f"  sampler {self.sampler}, pruner {self.pruner}, budget {self.budget or 'open'}"]
        lines += [f"  {p.describe()}" for p in self.params]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# parsing


def load_space(path: str | Path) -> SearchSpace:
    """Read a search space TOML file."""
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"{path}: no such search space file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SearchSpaceError(f"{path}: invalid TOML: {exc}") from exc
    return parse_space(data, source=str(path), default_name=path.stem)


def parse_space(data: dict[str, Any], source: str, default_name: str = "sweep") -> SearchSpace:
    """Validate a parsed TOML document (or a preset dict) into a SearchSpace."""

    def fail(key: str, problem: str) -> SearchSpaceError:
        return SearchSpaceError(f"{source}: {key}: {problem}")

    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise fail(unknown[0], f"unknown key (expected one of {', '.join(_TOP_KEYS)})")
    sampler = _choice(data.get("sampler", "tpe"), SAMPLERS, "sampler", fail)
    pruner = _choice(data.get("pruner", "none"), PRUNERS, "pruner", fail)
    trials = data.get("trials")
    if trials is not None and (not _is_int(trials) or trials <= 0):
        raise fail("trials", f"must be a positive integer, got {trials!r}")
    seed = data.get("seed", 0)
    if not _is_int(seed):
        raise fail("seed", f"must be an integer, got {seed!r}")
    train = _table(data.get("train", {}), "train", fail)
    model = _table(data.get("model", {}), "model", fail)
    fields = set(field_names())
    for key, value in train.items():
        if key not in fields:
            raise fail(f"train.{key}", "not a training option (see `ferkit train --help`)")
        if key in ("model_kwargs",):
            raise fail(f"train.{key}", "put model kwargs in the [model] table")
        _check_option(key, value, f"train.{key}", fail)
    raw_params = dict(_table(data.get("params", {}), "params", fail))
    raw_model_params = _table(raw_params.pop("model", {}), "params.model", fail)
    params: list[Param] = []
    for key, spec in raw_params.items():
        if key not in fields:
            raise fail(f"params.{key}", "not a training option; model kwargs go in [params.model]")
        if key in ("model_kwargs", "data", "out", "resume"):
            raise fail(f"params.{key}", "cannot be swept")
        param = _param(key, spec, f"params.{key}", fail)
        for value in param.choices or (param.low, param.high):
            _check_option(key, value, f"params.{key}", fail)
        params.append(param)
    for key, spec in raw_model_params.items():
        params.append(_param(MODEL_PREFIX + key, spec, f"params.model.{key}", fail))
    if not params:
        raise fail("params", "no parameters to sweep: add a [params] table")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "must be a string")
    space = SearchSpace(name=str(data.get("name", default_name)), params=tuple(params),
                        sampler=sampler, pruner=pruner, trials=trials, seed=int(seed),
                        train=train, model=model, description=description, source=source)
    if space.is_grid:
        space.grid()  # every parameter must be finite
        if pruner != "none":
            raise fail("pruner", "a grid runs every cell to the end; use pruner = 'none'")
    return space


def _param(name: str, spec: Any, key: str, fail) -> Param:
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise fail(key, "expected a list of choices or a table such as "
                        "{ type = \"float\", low = 0.0, high = 1.0 }")
    unknown = sorted(set(spec) - _PARAM_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_PARAM_KEYS))
        raise fail(f"{key}.{unknown[0]}", f"unknown key (expected {allowed})")
    kind = spec.get("type", "categorical" if "choices" in spec else None)
    if kind is None:
        raise fail(f"{key}.type", f"missing; one of {', '.join(PARAM_TYPES)}")
    if kind not in PARAM_TYPES:
        raise fail(f"{key}.type", f"{kind!r} is not one of {', '.join(PARAM_TYPES)}")
    if kind == "categorical":
        extra = sorted(set(spec) - {"type", "choices"})
        if extra:
            raise fail(f"{key}.{extra[0]}", "not used by a categorical parameter")
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise fail(f"{key}.choices", "must be a non-empty list")
        for c in choices:
            if not isinstance(c, str | int | float | bool):
                raise fail(f"{key}.choices", f"{c!r}: choices must be strings, numbers or booleans")
        if len(set(map(repr, choices))) != len(choices):
            raise fail(f"{key}.choices", "lists a value twice")
        return Param(name, "categorical", choices=tuple(choices))
    if "choices" in spec:
        raise fail(f"{key}.choices", f"not used by a {kind} parameter (use low/high)")
    for bound in ("low", "high"):
        if bound not in spec:
            raise fail(f"{key}.{bound}", "missing")
        if not _is_number(spec[bound]):
            raise fail(f"{key}.{bound}", f"must be a number, got {spec[bound]!r}")
    low, high = spec["low"], spec["high"]
    log = spec.get("log", kind == "log")
    if not isinstance(log, bool):
        raise fail(f"{key}.log", "must be true or false")
    if kind == "log" and not log:
        raise fail(f"{key}.log", "type = 'log' is always log-scaled")
    step = spec.get("step")
    if kind == "int":
        for bound in ("low", "high"):
            if not _is_int(spec[bound]):
                raise fail(f"{key}.{bound}", f"must be an integer for type = 'int', got "
                                             f"{spec[bound]!r}")
        if step is not None and (not _is_int(step) or step <= 0):
            raise fail(f"{key}.step", f"must be a positive integer, got {step!r}")
    elif step is not None and (not _is_number(step) or step <= 0):
        raise fail(f"{key}.step", f"must be a positive number, got {step!r}")
    if low > high:
        raise fail(key, f"low ({low}) is greater than high ({high})")
    if log and step is not None:
        raise fail(f"{key}.step", "cannot be combined with a log scale")
    if log and low <= 0:
        raise fail(f"{key}.low", f"must be > 0 on a log scale, got {low}")
    return Param(name, "int" if kind == "int" else "float", low=low, high=high, step=step,
                 log=log)


def _choice(value: Any, allowed: tuple[str, ...], key: str, fail) -> str:
    if value not in allowed:
        raise fail(key, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _table(value: Any, key: str, fail) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(key, f"must be a table, got {type(value).__name__}")
    return dict(value)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_option(name: str, value: Any, key: str, fail) -> None:
    """A value the training option `name` takes (its type, as TrainConfig.override checks it)."""
    try:
        check_type(name, value)
    except ConfigError as exc:
        raise fail(key, str(exc)) from None


# ---------------------------------------------------------------------------------------------
# presets: the source project's experiment grid, plus a real hyper-parameter search. They are
# package data (ferkit/sweeps/presets/*.toml), the same format as a --space file.

_PRESET_DIR = "presets"


def _preset_files() -> dict[str, Any]:
    """Preset name -> its packaged TOML file (an importlib.resources Traversable)."""
    root = resources.files("ferkit.sweeps") / _PRESET_DIR
    return {f.name[:-5]: f for f in sorted(root.iterdir(), key=lambda f: f.name)
            if f.name.endswith(".toml")}


PRESETS: tuple[str, ...] = tuple(_preset_files())


def preset(name: str) -> SearchSpace:
    files = _preset_files()
    if name not in files:
        raise SearchSpaceError(f"unknown sweep preset {name!r}; presets: {', '.join(files)}")
    data = tomllib.loads(files[name].read_text(encoding="utf-8"))
    return parse_space(data, source=f"preset {name}", default_name=name)


def resolve_space(preset_name: str | None = None, space_file: str | Path | None = None
                  ) -> SearchSpace:
    """Exactly one of --preset NAME and --space FILE.toml."""
    if bool(preset_name) == bool(space_file):
        raise SearchSpaceError("give exactly one of --preset NAME "
                               f"({', '.join(PRESETS)}) and --space FILE.toml")
    return preset(preset_name) if preset_name else load_space(space_file)
