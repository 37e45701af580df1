"""ferkit CLI: `ferkit models`, the model zoo as a table (or JSON)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:  # Rich is imported when a table is printed, not when the CLI starts
    from rich.table import Table

HELP = (
    "List the model zoo: size, compute and the accuracy reported.\n\n"
    "MFLOPs: one forward pass on one 48x48 face, as torch's FlopCounterMode counts it: "
    "convolutions and matrix products only, one multiply-add = 2 FLOPs. "
    "MB: the fp32 weights (parameters and BN statistics), 1 MB = 10^6 bytes. "
    "Reported: the accuracy the source project published, on its own split and set-up "
    "('-': none published; for ferkit's own ferkit-* models, train one and run "
    "`ferkit evaluate`).\n\n"
    "Any name in the first column works with `ferkit train --model NAME`.\n\n"
    "Examples:\n\n"
    "  ferkit models\n\n"
    "  ferkit models --json\n\n"
    "  ferkit models --json | jq -r '.[] | select(.params < 1000000) | .name'"
)


def _fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _fmt_num(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _short_reason(message: str) -> str:
    """'needs X (pip install Y)' -> 'not installed: pip install Y'; other messages unchanged."""
    hint = re.search(r"\((pip install [^)]*)\)", message)
    return f"not installed: {hint.group(1)}" if hint else f"unavailable: {message}"


def models_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list (one object per model) "
                                 "instead of the table."),
) -> None:
    from ferkit.models.info import model_table

    rows = model_table()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return

    from rich.console import Console

    console = Console()
    if console.width >= WIDE_TABLE_COLUMNS:
        console.print(_wide_table(rows))
    else:  # the numbers in a table, the words below it, both readable at 80 columns
        console.print(_numbers_table(rows))
        console.print(_descriptions(rows))


# Below this terminal width the descriptions leave the table (they would wrap a word a line).
WIDE_TABLE_COLUMNS = 140
TITLE = "ferkit model zoo ({n} models, input 1x48x48)"
CAPTION = ("MFLOPs: per face, one multiply-add = 2 FLOPs; MB: fp32 weights. "
           "Reported: the source project's own figure.")


def _description(row: dict) -> str:
    """The row's description as Rich markup, with why it cannot be built here, if it cannot."""
    from rich.markup import escape

    text = escape(row["description"])
    if row.get("unavailable"):
        text += f" [yellow]({escape(_short_reason(row['unavailable']))})[/yellow]"
    return text


def _numbers(row: dict) -> list[str]:
    return [_fmt_int(row["params"]), _fmt_num(row["mflops"], 1), _fmt_num(row["weights_mb"], 2)]


def _table(rows: list[dict], caption: str | None) -> Table:
    from rich.table import Table

    table = Table(title=TITLE.format(n=len(rows)), title_justify="left", caption_justify="left",
                  caption=caption)
    table.add_column("name", style="bold cyan", no_wrap=True)
    for column in ("params", "MFLOPs", "MB"):
        table.add_column(column, justify="right", no_wrap=True)
    return table


def _wide_table(rows: list[dict]) -> Table:
    """One table: name, numbers, the reported figure with its source, the description."""
    from rich.markup import escape

    table = _table(rows, CAPTION)
    table.add_column("reported", ratio=2)
    table.add_column("description", ratio=3)
    for row in rows:
        table.add_row(escape(row["name"]), *_numbers(row), escape(row["reported"] or "-"),
                      _description(row))
    return table


def _numbers_table(rows: list[dict]) -> Table:
    """Name, numbers and the reported figure alone (its source is in the descriptions)."""
    from rich.markup import escape

    table = _table(rows, None)
    table.add_column("reported", no_wrap=True)
    for row in rows:
        figure = (row["reported"] or "-").split(" (")[0]
        table.add_row(escape(row["name"]), *_numbers(row), escape(figure))
    return table


def _descriptions(rows: list[dict]) -> Table:
    """Each model's description (and its reported figure's source) beside its name."""
    from rich.markup import escape
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    for row in rows:
        text = _description(row)
        if row["reported"]:
            text += f" Reported: {escape(row['reported'])}."
        grid.add_row(escape(row["name"]), text)
    grid.add_row("", "")
    grid.add_row("", CAPTION)
    return grid

def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("models", help=HELP, no_args_is_help=False)(models_command)
