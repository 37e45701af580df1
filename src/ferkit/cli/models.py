"""ferkit CLI: `ferkit models`, the model zoo as a table (or JSON)."""

from __future__ import annotations

import json
import re

import typer

HELP = (
    "List every model in the zoo: parameters, compute per face, weight size, and the accuracy "
    "the original project reported.\n\n"
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
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"ferkit model zoo ({len(rows)} models, input 1x48x48)",
                  title_justify="left", caption_justify="left",
                  caption="MFLOPs: per face, one multiply-add = 2 FLOPs; MB: fp32 weights. "
                          "Reported: the source project's own figure.")
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("MFLOPs", justify="right", no_wrap=True)
    table.add_column("MB", justify="right", no_wrap=True)
    table.add_column("reported", ratio=2)
    table.add_column("description", ratio=3)
    for row in rows:
        description = escape(row["description"])
        if row.get("unavailable"):
            description += f" [yellow]({escape(_short_reason(row['unavailable']))})[/yellow]"
        table.add_row(escape(row["name"]), _fmt_int(row["params"]), _fmt_num(row["mflops"], 1),
                      _fmt_num(row["weights_mb"], 2), escape(row["reported"] or "-"), description)
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("models", help=HELP, no_args_is_help=False)(models_command)
