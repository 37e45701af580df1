"""Options written once: a dataclass field made by `option()` carries its default, help text,
help panel and checks, so the command's Typer options (ferkit.cli.fields), its checks
(`check_fields`) and the library's defaults all read the same field. TrainConfig, ServeConfig
and SweepOptions are made of such fields.

A leaf module (standard library only): the command line builds --help from these fields
without importing numpy or torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from ferkit.errors import ConfigError


def option(default: Any = dataclasses.MISSING, *, help: str, panel: str, short: str = "",
           flag: str = "", negatable: bool = True, choices: tuple[str, ...] = (),
           bounds: tuple[float, float] | None = None, positive: bool = False,
           non_negative: bool = False, metavar: str = "",
           default_factory: Any = dataclasses.MISSING, **extra: Any) -> Any:
    """A dataclass field that is also a command-line option: its help text, panel and checks
    live here only (the CLI is generated from them, `check_field` runs the checks).

    flag: the option's name when it is not --field-name; short: e.g. "-d"; negatable: a bool
    option gets --no-NAME; choices / bounds (inclusive) / positive / non_negative: the values
    `check_field` accepts (None always passes: an option left unset); metavar: the value's
    name in --help; extra: more metadata for the owner (e.g. which TrainConfig option a sweep
    option sets)."""
    meta = {"help": help, "panel": panel, "short": short, "flag": flag, "negatable": negatable,
            "choices": choices, "bounds": bounds, "positive": positive,
            "non_negative": non_negative, "metavar": metavar, **extra}
    return field(default=default, default_factory=default_factory, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line name of an option field: --batch-size for batch_size."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def default_of(f: dataclasses.Field) -> Any:
    """A field's default (a fresh one where it has a factory)."""
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def option_fields(cls: type, panels: tuple[str, ...]) -> tuple[dataclasses.Field, ...]:
    """`cls`'s option fields in --help order: by panel (each one of `panels`), then field
    order."""
    fields = [f for f in dataclasses.fields(cls) if "help" in f.metadata]
    for f in fields:
        if f.metadata["panel"] not in panels:
            raise ValueError(f"{cls.__name__}.{f.name}: panel {f.metadata['panel']!r} is not "
                             f"one of {panels}")
    return tuple(sorted(fields, key=lambda f: panels.index(f.metadata["panel"])))


# -- checks: every message names the flag the user types --------------------------------------

def check_choice(flag: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{flag} {value!r}: expected one of {', '.join(allowed)}")


def check_range(flag: str, value: float, lo: float, hi: float, hint: str = "") -> None:
    if value is None or not (lo <= value <= hi):
        raise ConfigError(f"{flag} must be in [{lo}, {hi}], got {value} {hint}".rstrip())


def check_positive(flag: str, value: float) -> None:
    if value is None or not value > 0:
        raise ConfigError(f"{flag} must be positive, got {value}")


def check_field(f: dataclasses.Field, value: Any) -> None:
    """The checks in a field's metadata (None: an option left unset, e.g. --holdout)."""
    m, flag = f.metadata, flag_of(f)
    if value is None:
        return
    if m.get("choices"):
        check_choice(flag, value, m["choices"])
    if m.get("bounds"):
        check_range(flag, value, *m["bounds"])
    if m.get("positive"):
        check_positive(flag, value)
    if m.get("non_negative") and value < 0:
        raise ConfigError(f"{flag} must be >= 0, got {value}")


def check_fields(obj: Any) -> None:
    """ConfigError naming the first option field of `obj` whose value fails its checks."""
    for f in dataclasses.fields(obj):
        if "help" in f.metadata:
            check_field(f, getattr(obj, f.name))
