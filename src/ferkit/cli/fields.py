"""Typer options generated from dataclass fields made by `ferkit.options.option()`.

A field's metadata holds its help text and panel, so adding a field to the dataclass adds the
option to the command line, with nothing else to edit. Types come from the resolved annotations:
a bool becomes --NAME/--no-NAME (unless negatable=False), a dict a repeatable KEY=VALUE option.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any

import typer

from ferkit.options import default_of, flag_of

KIND = inspect.Parameter.KEYWORD_ONLY


def field_parameter(f: dataclasses.Field, hint: Any) -> inspect.Parameter:
    """The Typer option of one dataclass field."""
    m = f.metadata
    flag = flag_of(f)
    default = default_of(f)
    annotation = hint
    decls = [flag]
    if typing.get_origin(hint) is dict or hint is dict:
        annotation, default = list[str], []
    elif hint is bool and m.get("negatable", True):
        decls = [f"{flag}/--no-{flag[2:]}"]
    if m.get("short"):
        decls.append(m["short"])
    info = typer.Option(default, *decls, help=m["help"], rich_help_panel=m["panel"],
                        metavar=m.get("metavar") or None)
    return inspect.Parameter(f.name, KIND, default=info, annotation=annotation)


def options_from(fields: Iterable[dataclasses.Field], hints: dict[str, Any],
                 extra: dict[str, list[inspect.Parameter]] | None = None,
                 panels: Iterable[str] = ()) -> list[inspect.Parameter]:
    """Options for `fields` (those with help metadata), panel by panel, each panel followed by
    the command's own `extra` options of that panel."""
    extra = dict(extra or {})
    out = []
    by_panel: dict[str, list[inspect.Parameter]] = {}
    for f in fields:
        if "help" in f.metadata:
            by_panel.setdefault(f.metadata["panel"], []).append(field_parameter(f, hints[f.name]))
    for panel in [*panels, *(p for p in by_panel if p not in panels)]:
        out += by_panel.pop(panel, []) + extra.pop(panel, [])
    for params in extra.values():
        out += params
    return out


def with_signature(func: Callable[..., Any], params: list[inspect.Parameter]) -> Callable:
    """`func(**kwargs)` presented to Typer as taking exactly `params`."""
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    func.__annotations__ = {p.name: p.annotation for p in params}
    return func


def cli_option(name: str, annotation: Any, default: Any, *decls: str, **kwargs: Any
               ) -> inspect.Parameter:
    """A command's own option (not a dataclass field), in the same form."""
    return inspect.Parameter(name, KIND, default=typer.Option(default, *decls, **kwargs),
                             annotation=annotation)
