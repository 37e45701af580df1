"""ferkit CLI: `ferkit report RUN_DIR... --out report.html` (compare training runs)."""

from __future__ import annotations

import json

import typer

HELP = """Compare training runs in one self-contained HTML page.

The page (figures embedded) shows the options that differ, a table (model, parameters, \
epochs, last and best val accuracy, macro-F1, train time), the learning curves overlaid and, \
with --data, each run's confusion matrix on its own validation faces.

Runs that share every option but the seed count as one recipe: the page and the terminal \
give its mean, standard deviation and range over the seeds. Options a run's ferkit did not \
record count at their defaults.

Macro-F1 comes from an evaluation JSON in the run dir (`ferkit evaluate --out RUN_DIR/eval`), \
else from --data.

Examples:

  ferkit report runs/shallow runs/ferkit-vgg --out report.html

  ferkit report runs/sweeps/conv-stages/trial-* --data fer2013.zip \\
      --out stages.html

  # three seeds of two recipes: mean and spread of each
  ferkit report runs/base-s1 runs/base-s2 runs/base-s3 \\
      runs/strong-s1 runs/strong-s2 runs/strong-s3
"""


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("report", help=HELP, no_args_is_help=True)(report_command)


def report_command(
    runs: list[str] = typer.Argument(..., metavar="RUN_DIR",
                                     help="Run directories (from ferkit train or sweep)."),
    out: str = typer.Option("report.html", "--out", "-o", help="HTML file to write."),
    data: str = typer.Option(None, "--data", "-d", help="Dataset for the confusion matrices "
                             "(each run's own validation faces)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps."),
    title: str = typer.Option("ferkit run comparison", "--title", help="Page title."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs and the recipes' "
                                 "statistics as JSON on stdout (the page is written too)."),
) -> None:
    from ferkit.evaluation.compare import recipe_rows, summary_rows
    from ferkit.evaluation.report import format_summary, write_report

    path, records = write_report(runs, out, data=data, device=device, title=title)
    if as_json:
        typer.echo(json.dumps({"runs": summary_rows(records), "recipes": recipe_rows(records),
                               "html": str(path)}, indent=1))
        return
    typer.echo(f"compared {len(records)} runs:")
    typer.echo(format_summary(records))
    typer.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, self-contained)")
