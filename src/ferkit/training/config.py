"""TrainConfig: every training option, with defaults that train a good FER2013 model.

Each option is written once, as a field made by `option()`: its default, type, help text, help
panel and checks. `ferkit train`'s options are generated from these fields (ferkit.cli.fields),
`validated()` runs their checks, and `TrainConfig.override` is the one way the CLI, sweeps and
benches change options. The fields fall in two dataclasses: `RuntimeOptions` (where and how
fast a run executes: taken from the caller on --resume) and `Recipe` (everything else).

The config is what `ferkit train` writes to RUN_DIR/config.json and into every checkpoint, so a
run can be repeated or resumed from it alone. Options left as None are resolved from others by
`validated()` (e.g. the learning rate from the optimizer, the augmentation fields from the preset),
and the resolved values are what gets saved.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import logging
import math
import os
import typing
from dataclasses import dataclass
from typing import Any

from ferkit import options
from ferkit.errors import ConfigError
from ferkit.options import check_field as _check
from ferkit.options import flag_of

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine")
BALANCE_MODES = ("none", "weights", "oversample")
DISTILL_TARGETS = ("live", "fixed", "views")  # see distill.py: a teacher forward per step,
# once per clean face, or once per stored augmented view
MIX_MODES = ("none", "mixup", "cutmix")  # see mixing.py
AUGMENT_PRESETS = ("none", "light", "default", "strong")

# Fields of each augmentation preset (see ferkit.training.augment for what each one does).
PRESETS: dict[str, dict[str, float]] = {
    "none": {"aug_flip": 0.0, "aug_rotate": 0.0, "aug_shift": 0.0, "aug_scale": 0.0,
             "aug_jitter": 0.0, "aug_erase": 0.0},
    "light": {"aug_flip": 0.5, "aug_rotate": 5.0, "aug_shift": 0.05, "aug_scale": 0.05,
              "aug_jitter": 0.0, "aug_erase": 0.0},
    "default": {"aug_flip": 0.5, "aug_rotate": 10.0, "aug_shift": 0.1, "aug_scale": 0.1,
                "aug_jitter": 0.2, "aug_erase": 0.25},
    "strong": {"aug_flip": 0.5, "aug_rotate": 15.0, "aug_shift": 0.15, "aug_scale": 0.2,
               "aug_jitter": 0.3, "aug_erase": 0.5},
}

# config.json's record of how the run executed (device, precision, threads): not an option.
EXECUTION_KEY = "execution"
# Options an older ferkit wrote that mean nothing now: dropped on load, with a logged note.
RETIRED_FIELDS = {"num_workers": "unused by the in-memory data pipeline"}
# The `ferkit train --help` panels, in order. Every option field names one.
PANELS = ("Data", "Model", "Optimisation", "Distillation", "Augmentation", "Run", "Distributed")

_DEFAULT_LR = {"sgd": 0.05, "adamw": 2e-3}
_DEFAULT_WD = {"sgd": 5e-4, "adamw": 0.05}
_DEFAULT_WARMUP = {"onecycle": 0.25, "cosine": 0.05}


def option(default: Any = dataclasses.MISSING, *, panel: str, **kwargs: Any) -> Any:
    """A dataclass field that is also a `ferkit train` option (ferkit.options.option, whose
    arguments it takes), in one of the --help PANELS: `validated()` runs its checks once None
    options are resolved."""
    if panel not in PANELS:
        raise ValueError(f"panel {panel!r} is not one of {PANELS}")
    return options.option(default, panel=panel, **kwargs)


def flag_name(name: str) -> str:
    """The command-line name of option `name`, for messages: every message that names an
    option goes through here (or flag_of), so it reads as the flag the user types."""
    f = _fields(TrainConfig).get(name)
    return flag_of(f) if f is not None else "--" + name.replace("_", "-")


def train_option(name: str, default: Any = None, *, panel: str, help: str = "",
                 more_help: str = "", **extra: Any) -> Any:
    """A field of another command (`ferkit sweep`) that sets `ferkit train`'s option `name`:
    its flag, short form and checks are that option's, and so is its help unless `help`
    replaces it (`more_help` is appended); `extra`: more metadata for the owner."""
    meta = dict(_fields(TrainConfig)[name].metadata)
    meta.update(panel=panel, help=(help or meta["help"]) + more_help, **extra)
    return options.option(default, **meta)


@dataclass
class RuntimeOptions:
    """Where and how fast a run executes, not what it learns: on --resume these come from the
    caller, every other option from the run's saved config."""

    data: str = option("", short="-d", panel="Data",
                       help="Dataset: FER2013 CSV, image folder or zip.")
    device: str = option("auto", panel="Run", help="auto | cpu | cuda | cuda:N | mps.")
    threads: int = option(0, panel="Run", non_negative=True, help="CPU threads (0 = all cores).")
    compile: bool = option(False, panel="Run", help="torch.compile the model.")
    out: str = option("", short="-o", panel="Run",
                      help="Run directory (default: a new folder in runs/ named after the "
                           "date, time and model).")
    resume: bool = option(False, panel="Run", negatable=False,
                          help="Continue the run in --out from its last.pt (its saved options "
                          "are used; the Run options --data, --device, --threads, --compile, "
                          "--compact-last may be given).")
    compact_last: bool = option(False, panel="Run",
                                help="Write last.pt compact (16-bit weights and optimizer "
                                "state, each tensor once: about a third of the size) to carry a "
                                "run to another machine; --resume from it continues close to, "
                                "not exactly like, an uninterrupted run.")
    dist_timeout: float = option(600.0, panel="Distributed", positive=True,  # check_execution
                                 help="Distributed runs: seconds to wait for the other processes "
                                 "at a collective before the run stops (a dead or stuck "
                                 "process).")


@dataclass
class Recipe:
    """What a run learns and how: everything `ferkit train --resume` takes from the saved run."""

    # data and model
    model: str = option("shallow-cnn", short="-m", panel="Model",
                        help="Model name (ferkit models list).")
    model_kwargs: dict[str, Any] = option(default_factory=dict, flag="--model-arg", panel="Model",
                                          help="Model factory argument KEY=VALUE (repeatable), "
                                          "e.g. --model-arg dropout=0.3.")
    holdout: float | None = option(None, panel="Data", bounds=(0, 0.9),
                                   help="Hold out this fraction of Training (stratified, fixed) "
                                   "as val (default: the val split, or 0.1 if there is none).")
    holdout_seed: int = option(0, panel="Data",
                               help="Seed of the holdout slice (independent of --seed).")
    limit: int = option(0, panel="Data", non_negative=True,
                        help="Train on N training images only: the first N of a fixed shuffle, "
                        "so the class mix is kept (0 = all).")

    # optimisation
    epochs: int = option(30, short="-e", panel="Optimisation", positive=True, help="Epochs.")
    batch_size: int = option(128, short="-b", panel="Optimisation", positive=True,
                             help="Global batch size.")
    lr: float | None = option(None, panel="Optimisation", positive=True,
                              help="Peak learning rate (default 0.05 for sgd, 2e-3 for adamw).")
    optimizer: str = option("sgd", panel="Optimisation", choices=OPTIMIZERS,
                            help="sgd (Nesterov) | adamw.")
    momentum: float = option(0.9, panel="Optimisation", bounds=(0, 0.999),
                             help="SGD momentum (one-cycle cycles it between 0.85 and 0.95).")
    weight_decay: float | None = option(None, panel="Optimisation", bounds=(0, math.inf),
                                        help="Default 5e-4 for sgd, 0.05 for adamw; never on "
                                        "BN/bias.")
    schedule: str = option("onecycle", panel="Optimisation", choices=SCHEDULES,
                           help="onecycle | cosine (per step).")
    warmup: float | None = option(None, panel="Optimisation", bounds=(0, 0.99),
                                  help="Warm-up fraction of all steps (default 0.25 onecycle, "
                                  "0.05 cosine).")
    label_smoothing: float = option(0.1, panel="Optimisation", bounds=(0, 0.99),
                                    help="Label smoothing of the cross-entropy loss.")
    grad_clip: float = option(0.0, panel="Optimisation", bounds=(0, math.inf),
                              help="Max gradient norm (0 = off).")
    sam: float = option(0.0, panel="Optimisation", bounds=(0, 10),
                        help="Sharpness-aware minimization radius rho, e.g. 0.05 (0 = off): "
                        "each step takes the gradient at the worst nearby weights; twice the "
                        "compute per step.")
    ema: float = option(0.0, panel="Optimisation",
                        help="EMA decay of the weights, e.g. 0.999 (0 = off), warmed up over the "
                        "first updates; the EMA model is evaluated and saved.")
    early_stopping: int = option(0, panel="Optimisation", non_negative=True,
                                 help="Stop after N epochs without a better val accuracy "
                                 "(0 = off).")
    balance: str = option("none", panel="Optimisation", choices=BALANCE_MODES,
                          help="none | weights (class-weighted loss) | oversample (minority "
                          "classes drawn more often).")
    balance_power: float = option(0.5, panel="Optimisation", bounds=(0, 4),
                                  help="Class weight ~ (1/count)^P; 1 = fully balanced.")
    teacher: str = option("", panel="Distillation",
                          help="Distil from this teacher: a run directory, checkpoint or "
                          "`ferkit ensemble` file.")
    distill_weight: float = option(0.7, panel="Distillation", bounds=(0, 1),
                                   help="Share of the loss from the teacher's soft targets "
                                   "(0..1).")
    distill_temperature: float = option(4.0, panel="Distillation", positive=True,
                                        help="Softening temperature T.")
    distill_targets: str = option("live", panel="Distillation", choices=DISTILL_TARGETS,
                                  help="live: the teacher labels every augmented batch (one "
                                  "teacher forward per step); fixed: its flip-averaged "
                                  "probabilities on each clean training face, computed once "
                                  "before training (no teacher cost per step); views: the same "
                                  "on --distill-views stored augmented views of every face.")
    distill_views: int = option(8, panel="Distillation", positive=True,
                                help="Augmented views of each face stored for --distill-targets "
                                "views (each costs a teacher pass over Training, and 2.3 KB a "
                                "face).")
    freeze_epochs: int = option(0, panel="Optimisation", non_negative=True,
                                help="Transfer learning: train only the head for the first N "
                                "epochs.")
    backbone_lr_scale: float = option(1.0, panel="Optimisation", bounds=(0, 10),
                                      help="Transfer learning: backbone LR = lr x this "
                                      "(e.g. 0.1).")

    # augmentation, applied to whole batches on the device
    augment: str = option("default", short="-a", panel="Augmentation", choices=AUGMENT_PRESETS,
                          help="Preset: none | light | default | strong (the --aug-* options "
                          "override its fields).")
    aug_flip: float | None = option(None, panel="Augmentation", bounds=(0, 1),
                                    help="Horizontal flip probability.")
    aug_rotate: float | None = option(None, panel="Augmentation", bounds=(0, 180),
                                      help="Max rotation, degrees.")
    aug_shift: float | None = option(None, panel="Augmentation", bounds=(0, 0.5),
                                     help="Max shift, image fraction.")
    aug_scale: float | None = option(None, panel="Augmentation", bounds=(0, 0.9),
                                     help="Max zoom in/out, fraction.")
    aug_jitter: float | None = option(None, panel="Augmentation", bounds=(0, 0.9),
                                      help="Max brightness/contrast change.")
    aug_erase: float | None = option(None, panel="Augmentation", bounds=(0, 1),
                                     help="Random-erasing probability.")
    mix: str = option("none", panel="Augmentation", choices=MIX_MODES,
                      help="Mix pairs of faces in a batch: none | mixup (blend two faces) | "
                      "cutmix (paste a box of one into the other); the loss blends their labels "
                      "in the same shares.")
    mix_alpha: float = option(1.0, panel="Augmentation", positive=True,
                              help="--mix: the mixed share ~ Beta(alpha, alpha).")
    mix_prob: float = option(0.5, panel="Augmentation", bounds=(0, 1),
                             help="--mix: the share of batches mixed.")

    # execution that is part of the recipe (it changes the numbers a run produces)
    seed: int = option(0, panel="Run", help="Seed of the weights, shuffling and augmentation.")
    amp: str = option("auto", panel="Run",  # checked against ferkit.precision.AMP_MODES
                      help="auto | bf16 | fp16 | off. auto: bf16 on CUDA; on the CPU the "
                      "fastest of fp32 and (with avx512_bf16/amx_bf16 units) bf16, each in both "
                      "memory formats, timed on the model's own step once per machine.")
    channels_last: bool = option(True, panel="Run",
                                 help="Allow the channels_last memory format (CUDA; on the CPU "
                                 "where --amp auto times it faster).")
    eval_batch_size: int = option(0, panel="Run", non_negative=True,
                                  help="0 = 1024 on CUDA, 256 on the CPU.")
    sync_bn: bool = option(False, panel="Distributed",
                           help="Distributed runs: BatchNorm statistics over the global batch "
                           "instead of each process's slice of it.")


RUNTIME_FIELDS = tuple(f.name for f in dataclasses.fields(RuntimeOptions))


@dataclass
class TrainConfig(Recipe, RuntimeOptions):
    """All options of a training run: the recipe and the runtime options, flat (config.json
    and checkpoints store it as one dict). Each field's metadata is its CLI help and checks."""

    def validated(self) -> TrainConfig:
        """A copy with None options resolved; raises ConfigError on a value that cannot work."""
        c = dataclasses.replace(self)  # check_type copies model_kwargs
        if isinstance(c.amp, bool):  # configs before --amp took a mode: true/false
            c.amp = "auto" if c.amp else "off"
        for f in dataclasses.fields(c):
            setattr(c, f.name, check_type(f.name, getattr(c, f.name), cls=type(c)))
        if c.optimizer in OPTIMIZERS:
            if c.lr is None:
                c.lr = _DEFAULT_LR[c.optimizer]
            if c.weight_decay is None:
                c.weight_decay = _DEFAULT_WD[c.optimizer]
        if c.warmup is None and c.schedule in SCHEDULES:
            c.warmup = _DEFAULT_WARMUP[c.schedule]
        for name, value in PRESETS.get(c.augment, {}).items():
            if getattr(c, name) is None:
                setattr(c, name, value)
        for f in dataclasses.fields(c):
            _check(f, getattr(c, f.name))
        if c.ema != 0:
            _range("ema", c.ema, 0, 0.99999, "(an EMA decay such as 0.999, or 0 for off)")
        from ferkit.precision import AMP_MODES  # imports torch: not when building the CLI

        _choice("amp", c.amp, AMP_MODES)
        check_execution(c)
        return c

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (config.json, checkpoints)."""
        return dataclasses.asdict(self)

    def runtime(self) -> RuntimeOptions:
        return RuntimeOptions(**{k: getattr(self, k) for k in RUNTIME_FIELDS})

    @classmethod
    def from_dict(cls, d: dict[str, Any], strict: bool = True) -> TrainConfig:
        """Inverse of to_dict; unknown keys are an error unless strict=False (old checkpoints).
        Retired options (RETIRED_FIELDS) are dropped with a logged note."""
        names = set(field_names(cls))
        retired = sorted(set(d) & set(RETIRED_FIELDS))
        if retired:
            log.info("ignoring retired training option(s) %s (%s)", ", ".join(retired),
                     "; ".join(RETIRED_FIELDS[k] for k in retired))
        unknown = sorted(set(d) - names - {EXECUTION_KEY} - set(RETIRED_FIELDS))
        if unknown and strict:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def override(self, values: dict[str, Any], source: str = "") -> TrainConfig:
        """A copy with `values` set: the one way options are overridden (the CLI over --config,
        sweeps over their space, benches' --set). Names and types are checked; a string value
        (from a command line) is parsed for its field's type. Errors name the option."""
        names = set(field_names(type(self)))
        where = f" ({source})" if source else ""
        changes = {}
        for key, value in values.items():
            if key not in names:
                raise ConfigError(f"unknown training option {key!r}{where} (see `ferkit train "
                                  "--help`)")
            changes[key] = check_type(key, value, where, cls=type(self))
        return dataclasses.replace(self, **changes)


def field_names(cls: type | None = None) -> tuple[str, ...]:
    """Every option of a training run, in TrainConfig's order."""
    return tuple(f.name for f in dataclasses.fields(cls or TrainConfig))


def option_fields(cls: type | None = None) -> tuple[dataclasses.Field, ...]:
    """TrainConfig's fields, in `ferkit train --help` order: by panel, then field order."""
    return options.option_fields(cls or TrainConfig, PANELS)


def parse_overrides(items: list[str], source: str = "--set") -> dict[str, Any]:
    """KEY=VALUE strings -> {key: raw string}, for TrainConfig.override to parse and check."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise ConfigError(f"{source} {item!r}: expected KEY=VALUE, e.g. ema=0.999")
        out[key] = raw.strip()
    return out


def parse_key_values(items: list[str], flag: str = "--model-arg") -> dict[str, Any]:
    """KEY=VALUE strings -> dict, values read as Python literals where they are one."""
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE, e.g. dropout=0.3")
        try:
            kwargs[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = raw.strip()
    return kwargs


def check_type(name: str, value: Any, where: str = "", cls: type | None = None) -> Any:
    """`value` as option `name`'s type (an int is a float; a string is parsed), else a
    ConfigError naming the option."""
    cls = cls or TrainConfig
    f = _fields(cls)[name]
    kind, optional = _kinds(cls)[name]
    opt = flag_of(f)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{opt} needs a value{where}")
    if isinstance(value, str) and kind is not str:
        return _parse(opt, kind, optional, value, where)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if isinstance(value, int) else value
    if kind is str and isinstance(value, str | os.PathLike):
        return os.fspath(value)  # a Path for data, out or teacher: stored as its string
    if kind is dict and isinstance(value, dict):
        return dict(value)
    raise ConfigError(f"{opt} {value!r}{where}: expected {_KIND_NAMES[kind]}")


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               dict: "a table of KEY=VALUE"}


def _parse(opt: str, kind: type, optional: bool, raw: str, where: str) -> Any:
    text = raw.strip()
    if optional and text.lower() in ("", "none", "null"):
        return None
    try:
        if kind is bool:
            return {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False,
                    "no": False, "off": False}[text.lower()]
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is dict:
            value = ast.literal_eval(text)
            if isinstance(value, dict):
                return value
    except (KeyError, ValueError, SyntaxError):
        pass
    raise ConfigError(f"{opt} {raw!r}{where}: expected {_KIND_NAMES[kind]}")


@functools.cache
def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


@functools.cache
def _kinds(cls: type) -> dict[str, tuple[type, bool]]:
    """Field name -> (base type, None allowed), from the resolved annotations."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = type(None) in typing.get_args(hint)
        base = args[0] if optional and len(args) == 1 else hint
        out[name] = (typing.get_origin(base) or base, optional)
    return out


def check_execution(c: TrainConfig) -> None:
    """ConfigError unless --device and --dist-timeout can work (checked before anything else,
    since a distributed run opens its device and process group first)."""
    dev = str(c.device).lower()
    if not (dev in ("auto", "cpu", "mps") or dev == "cuda" or
            (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"--device {c.device}: expected auto, cpu, cuda, cuda:N or mps")
    _check(_fields(TrainConfig)["dist_timeout"], c.dist_timeout)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    options.check_choice(flag_name(name), value, allowed)


def _range(name: str, value: float, lo: float, hi: float, hint: str = "") -> None:
    options.check_range(flag_name(name), value, lo, hi, hint)
